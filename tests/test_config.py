"""Every config composes, and what it composes builds."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from resnet_repro.cli import CONF_DIR, schedule_args
from resnet_repro.data import class_count
from resnet_repro.models import build_model, count_parameters

PRESETS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if p.stem != "resnet")
DATA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))


def load(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_presets_are_the_papers_nets():
    assert PRESETS == sorted(
        [f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)]
        + [f"plain{d}" for d in (20, 32, 44, 56, 110)]
    )


@pytest.mark.parametrize("preset", PRESETS)
def test_every_model_preset_composes_and_builds(preset):
    cfg = load(f"model={preset}")
    depth = int(preset.removeprefix("resnet").removeprefix("plain"))
    assert cfg.model.depth == depth
    assert cfg.model.shortcut == ("none" if preset.startswith("plain") else "A")
    if depth <= 110:  # 1202 is built (and counted) in test_models
        model = build_model(**cfg.model, num_classes=class_count(**cfg.data))
        assert count_parameters(model) > 0


@pytest.mark.parametrize("data", DATA)
def test_every_data_config_composes(data):
    cfg = load(f"data={data}")
    args = OmegaConf.to_container(cfg.data)
    assert {"name", "batch_size", "augment", "val_split"} <= args.keys()
    assert class_count(**args) in (10, 100)


def test_default_is_the_paper_recipe():
    cfg = load()
    assert (cfg.model.depth, cfg.model.shortcut, cfg.data.name) == (20, "A", "cifar10")
    assert cfg.data.batch_size == 128 and cfg.optim.lr == 0.1 and cfg.optim.momentum == 0.9
    assert cfg.optim.weight_decay == 1e-4 and cfg.schedule.iterations == 64000
    assert list(cfg.schedule.milestones) == [32000, 48000]


@pytest.mark.parametrize(
    ("preset", "warmup"),
    [("resnet56", 0), ("resnet110", 400), ("plain110", 400), ("resnet1202", 400)],
)
def test_warmup_auto_follows_depth(preset, warmup):
    assert schedule_args(load(f"model={preset}"))["warmup_iterations"] == warmup


def test_explicit_warmup_wins():
    cfg = load("model=resnet20", "schedule.warmup_iterations=100")
    assert schedule_args(cfg)["warmup_iterations"] == 100
