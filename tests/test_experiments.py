"""Every experiment composes, every configuration its sweep makes builds its model, and together
the experiments cover every row of the papers' tables."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import OmegaConf

from resnet_repro.cli import arguments
from resnet_repro.commandline import CONF_DIR
from resnet_repro.data import class_count
from resnet_repro.nets.models import build_model, count_parameters
from resnet_repro.reproduction.paper import TABLES
from resnet_repro.usage import sweep_grid, usage

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
SWEEPS = [e for e in EXPERIMENTS if e != "imagenet"]  # imagenet.yaml is one run's settings
RUNS = {  # what each sweep must run: the papers' grids, 5 seeds where [R2] and table 6 have 5
    "degradation_cpu": 4,
    "shortcuts_cpu": 6,  # and the identity and scaling again with seed 1: a second command
    "r1_cifar": 10,
    "r1_table6_short": 3,  # the control of docs/r1_table6.md, a sweep over seeds
    "r1_resnet110_seeds": 5,
    "r1_imagenet": 8,
    "r2_table1": 50,
    "r2_table2": 50,
    "r2_tables34": 60,
}


def compose_cfg(*overrides, hydra=False):
    return compose("config", overrides=list(overrides), return_hydra_config=hydra)


@pytest.fixture(scope="module", autouse=True)
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


@pytest.fixture(scope="module")
def configurations() -> dict[str, tuple[list, list[str]]]:
    out = {}
    for name in SWEEPS:
        params = compose_cfg(f"experiment={name}", "data.root=/d", hydra=True).hydra.sweeper.params
        points, seeds = sweep_grid(params)
        out[name] = [compose_cfg(f"experiment={name}", "data.root=/d", *p) for p in points], seeds
    return out


def test_the_experiments_are_the_papers_results():
    assert set(SWEEPS) == set(RUNS)


@pytest.mark.parametrize("name", SWEEPS)
def test_experiment_is_a_tagged_multirun_of_the_right_size(name, configurations):
    cfg = compose_cfg(f"experiment={name}", "data.root=/d", hydra=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert cfg.hydra.sweep.dir.startswith(f"outputs/{name}/")
    cfgs, seeds = configurations[name]
    assert len(cfgs) * len(seeds) == RUNS[name]
    assert all(list(c.tags) == [name] for c in cfgs)
    # Every point differs from every other: no configuration runs twice under one seed.
    keys = {OmegaConf.to_yaml(OmegaConf.masked_copy(c, ["model", "data"])) for c in cfgs}
    assert len(keys) == len(cfgs) and len(set(seeds)) == len(seeds)


@pytest.mark.parametrize("name", SWEEPS)
def test_every_configuration_of_the_sweep_builds(name, configurations):
    for cfg in configurations[name][0]:
        s = arguments(cfg)  # the checks a run makes before it starts
        with torch.device("meta"):  # no memory, no time: ResNet-1202 and ImageNet nets too
            imagenet = s.data["name"] == "imagenet"
            model = build_model(**s.model, num_classes=1000 if imagenet else class_count(**s.data))
        assert count_parameters(model) > 0


def test_every_row_of_the_papers_tables_has_an_experiment(configurations):
    configs = [
        (OmegaConf.to_container(c, resolve=True), seeds)
        for cs, seeds in configurations.values()
        for c in cs
    ]
    for table in TABLES:
        for row in table.rows:
            seeds = {s for c, ss in configs if row.match(c) for s in ss}
            assert seeds, f"{table.title}: no experiment runs {row.name}"
            if table.title.startswith("[R2]") or row.name == "ResNet-110":
                assert len(seeds) >= 5, row.name  # the median or mean of 5 runs


def test_table1_cases_are_the_papers_settings(configurations):
    models = {
        c.model.shortcut_variant + f" {c.model.shortcut_scale}/{c.model.residual_scale}"
        f" b{c.model.gate_bias:g}"
        for c in configurations["r2_table1"][0]
    }
    assert models == {
        "identity 1.0/1.0 b0",
        "identity 0.5/1.0 b0",
        "identity 0.5/0.5 b0",
        "exclusive_gating 1.0/1.0 b0",
        "exclusive_gating 1.0/1.0 b-6",
        "exclusive_gating 1.0/1.0 b-7",
        "shortcut_gating 1.0/1.0 b0",
        "shortcut_gating 1.0/1.0 b-6",
        "conv1x1 1.0/1.0 b0",
        "dropout 1.0/1.0 b0",
    }
    assert {c.model.depth for c in configurations["r2_table1"][0]} == {110}
    assert configurations["r2_table1"][1] == ["0", "1", "2", "3", "4"]


def test_degradation_cpu_is_a_shortened_paper_schedule(configurations):
    cfgs = configurations["degradation_cpu"][0]
    assert {c.model.depth for c in cfgs} == {20, 56}
    assert {c.model.shortcut for c in cfgs} == {"none", "A"}
    s = cfgs[0].schedule
    # The lr drops where [R1]'s are: at 1/2 and 3/4 of the schedule (32k and 48k of 64k).
    assert list(s.milestones) == [s.iterations // 2, s.iterations * 3 // 4]


def test_shortcuts_cpu_is_r2s_recipe_shortened(configurations):
    cfgs, seeds = configurations["shortcuts_cpu"]
    assert {c.model.depth for c in cfgs} == {32} and seeds == ["0"]
    m = [c.model for c in cfgs]
    cases = {(c.shortcut_variant, c.shortcut_scale, c.residual_scale, c.gate_bias) for c in m}
    assert cases == {
        ("identity", 1.0, 1.0, 0.0),
        ("identity", 0.5, 1.0, 0.0),
        ("exclusive_gating", 1.0, 1.0, 0.0),
        ("shortcut_gating", 1.0, 1.0, 0.0),
        ("conv1x1", 1.0, 1.0, 0.0),
        ("dropout", 1.0, 1.0, 0.0),
    }
    # [R2]'s schedule shortened as degradation_cpu shortens [R1]'s: 64000 iterations, the lr
    # divided at 32k and 48k, and 400 iterations of warm-up, all by the same factor.
    s = cfgs[0].schedule
    assert list(s.milestones) == [s.iterations // 2, s.iterations * 3 // 4]
    assert s.warmup_iterations * 64000 == 400 * s.iterations and s.warmup_lr == 0.01
    r1 = configurations["degradation_cpu"][0][0].schedule
    assert (s.iterations, list(s.milestones)) == (r1.iterations, list(r1.milestones))


def test_r1_table6_short_is_r1s_recipe_20_times_shorter(configurations):
    cfgs, seeds = configurations["r1_table6_short"]
    assert [c.model.depth for c in cfgs] == [20] and seeds == ["0", "1", "2"]
    s = cfgs[0].schedule
    assert s.iterations * 20 == 64000 and list(s.milestones) == [1600, 2400]
    default = compose_cfg("data.root=/d")
    for group in ("data", "optim"):  # the recipe itself is [R1]'s, as it ships
        assert cfgs[0][group] == default[group]


def test_help_introduces_the_tool_and_lists_every_experiment():
    text = usage(CONF_DIR)
    assert text.startswith("resnet-train: train the ResNets")
    assert "powered by Hydra" not in text
    for name in EXPERIMENTS:
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(name + " "))
        if name in RUNS:
            assert f"{RUNS[name]} runs" in line


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_an_experiment_goes_to_a_launcher_as_the_same_sweep(launcher):
    cfg = compose_cfg(
        "experiment=r2_table1", f"hydra/launcher={launcher}", "data.root=/d", hydra=True
    )
    assert cfg.hydra.launcher._target_.endswith(f"{launcher.capitalize()}Launcher")
    assert cfg.hydra.mode == RunMode.MULTIRUN and "shortcut_case" in cfg.hydra.sweeper.params
