"""Every config composes, and what it composes builds."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from resnet_repro.cli import arguments
from resnet_repro.commandline import CONF_DIR
from resnet_repro.data import class_count
from resnet_repro.nets.models import MODEL_KEYS, build_model, model_defaults

PRESETS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if p.stem != "resnet")
DATA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))


def load(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_presets_are_the_papers_nets():
    cifar = [f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202, 164, 1001)]
    cifar += [f"plain{d}" for d in (20, 32, 44, 56, 110)]
    cifar += [f"preact_resnet{d}" for d in (110, 164, 1001)]
    imagenet = [f"{p}resnet{d}" for p in ("", "preact_") for d in (18, 34, 50, 101, 152)]
    imagenet += ["plain18", "plain34"]
    assert PRESETS == sorted(cifar + imagenet)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_model_preset_builds_and_trains(preset):
    cfg = load(f"model={preset}")
    depth = int(preset.split("resnet")[-1].removeprefix("plain"))
    assert cfg.model.depth == depth
    assert (cfg.model.shortcut == "none") == preset.startswith("plain")
    assert (cfg.model.activation == "full_preact") == preset.startswith("preact")
    model = build_model(**cfg.model, num_classes=7)
    size = 64 if cfg.model.arch == "imagenet" else 32
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.any() for p in model.parameters())


@pytest.mark.parametrize("data", DATA)
def test_every_data_config_composes(data):
    cfg = load(f"data={data}")
    args = OmegaConf.to_container(cfg.data)
    assert {"name", "batch_size", "augment"} <= args.keys()
    if data in ("imagenet", "imagefolder"):
        assert args["root"] == "???" or OmegaConf.is_missing(cfg.data, "root")
    else:
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
    assert arguments(load(f"model={preset}")).schedule["warmup_iterations"] == warmup


def test_explicit_warmup_wins():
    cfg = load("model=resnet20", "schedule.warmup_iterations=100")
    assert arguments(cfg).schedule["warmup_iterations"] == 100


def test_imagenet_schedule_counts_epochs_and_scales_lr_with_batch():
    cfg = load(
        "model=resnet50",
        "data=imagenet",
        "data.root=/x",
        "schedule=imagenet",
        "data.batch_size=512",
    )
    schedule = arguments(cfg).make_schedule(steps_per_epoch=2503)
    assert schedule.lr == pytest.approx(0.2)  # 0.1 per 256 images, scaled linearly
    assert schedule.iterations == 90 * 2503
    assert schedule.milestones == (30 * 2503, 60 * 2503) and schedule.warmup_iterations == 0
    assert cfg.optim.weight_decay == 1e-4


def test_imagenet_experiment_sets_the_axes_and_model_can_be_chosen():
    cfg = load("experiment=imagenet", "model=resnet34", "data.root=/x")
    assert (cfg.model.arch, cfg.model.depth, cfg.data.name) == ("imagenet", 34, "imagenet")
    assert cfg.schedule.epochs == 90 and cfg.data.batch_size == 256
    assert load("experiment=imagenet").model.depth == 50


def launcher_config(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra.launcher


def test_slurm_launcher_config_composes():
    # hydra/launcher=slurm: one SLURM job per run of a sweep, one task per GPU, requeued.
    launcher = launcher_config("hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4")
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4 and launcher.nodes == 1
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s >= 60
    assert launcher.submitit_folder.endswith("/.submitit/%j")  # beside the sweep
    from hydra.utils import instantiate  # the plugin takes these settings as they are

    built = instantiate(launcher)
    assert built.params["tasks_per_node"] == 4 and built.params["max_num_timeout"] == 20


def test_local_launcher_config_composes():
    # hydra/launcher=local: the sweep's runs side by side, with slots beside the sweep.
    launcher = launcher_config("hydra/launcher=local", "hydra.launcher.runs_per_gpu=4")
    assert launcher._target_ == "hydra_plugins.resnet_repro.LocalLauncher"
    assert launcher.n_jobs is None and launcher.runs_per_gpu == 4
    assert launcher.slots_dir.endswith("/.slots") and launcher.timeout_min >= 525600
    from hydra.core.plugins import Plugins  # Hydra finds it where it looks for launchers

    assert "hydra_plugins.resnet_repro.LocalLauncher" in Plugins.instance().class_name_to_class


def test_trainer_defaults_are_the_fast_safe_ones():
    tr = load().trainer
    assert (tr.precision, tr.channels_last, tr.compile, tr.sync_bn) == ("auto", True, "auto", False)
    assert load("model=resnet1202").model.checkpointing is False


def test_the_model_configs_defaults_are_the_codes():
    # conf/model/resnet.yaml shows every model setting; build_model and UnitOptions hold the
    # defaults the code uses (and reads runs written before a setting existed with).
    yaml = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "resnet.yaml"))
    assert yaml.pop("depth") == "???" and sorted(yaml) == sorted(MODEL_KEYS[1:])
    assert yaml == model_defaults()
