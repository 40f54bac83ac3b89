"""Every setting with a type or a range is checked in one place (settings.py), with a message
that names the key and what is allowed; typos name the key they are close to."""

import pytest
from hydra import compose, initialize_config_dir

from resnet_repro.cli import arguments
from resnet_repro.commandline import CONF_DIR, check_overrides
from resnet_repro.errors import UserError


def load(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# override -> what the message must say
BAD = {
    "model.depth=abc": "model.depth='abc' must be a whole number",
    "model.depth=20.5": "model.depth=20.5 must be a whole number",
    "data.batch_size=0": "data.batch_size=0 must be a whole number >= 1",
    "data.batch_size=true": "data.batch_size=True must be a whole number",
    "data.val_split=-5": "data.val_split=-5 must be a whole number >= 0",
    "optim.lr=nan": "optim.lr=nan must be a finite number > 0",
    "optim.lr=inf": "optim.lr=inf must be a finite number > 0",
    "optim.lr=-0.1": "optim.lr=-0.1 must be a finite number > 0",
    "optim.momentum=-1": "optim.momentum=-1 must be a finite number in [0, 1)",
    "optim.momentum=1": "optim.momentum=1 must be a finite number in [0, 1)",
    "optim.weight_decay=-1": "optim.weight_decay=-1 must be a finite number >= 0",
    "optim.nesterov=maybe": "optim.nesterov='maybe' must be true or false",
    "schedule.iterations=0": "schedule.iterations=0 must be a whole number >= 1",
    "schedule.milestones=abc": "schedule.milestones='abc' must be a list of iterations",
    "schedule.milestones=[48000,32000]": "in increasing order",
    "schedule.milestones=[1.5]": "whole numbers >= 1",
    "schedule.milestones=[0]": "whole numbers >= 1",
    "schedule.gamma=0": "schedule.gamma=0 must be a finite number in (0, 1]",
    "schedule.gamma=10": "schedule.gamma=10 must be a finite number in (0, 1]",
    "schedule.warmup_iterations=-1": "must be auto, or a whole number >= 0",
    "schedule.warmup_lr=0": "schedule.warmup_lr=0 must be a finite number > 0",
    "trainer.seed=-1": "trainer.seed=-1 must be a whole number in [0, 4294967295]",
    "trainer.seed=abc": "trainer.seed='abc' must be a whole number",
    "trainer.threads=-2": "trainer.threads=-2 must be a whole number >= 1, or null",
    "trainer.threads=0": "trainer.threads=0 must be a whole number >= 1, or null",
    "trainer.precision=half": "trainer.precision='half' must be auto, fp32, bf16, fp16",
    "trainer.compile=maybe": "trainer.compile='maybe' must be auto, true or false",
    "trainer.device=tpu": "trainer.device='tpu' must be auto, cpu, cuda",
    "trainer.eval_batch_size=0": "trainer.eval_batch_size=0 must be a whole number >= 1",
    "trainer.log_every=-1": "trainer.log_every=-1 must be a whole number >= 1",
    "trainer.ckpt_every=0": "trainer.ckpt_every=0 must be a whole number >= 1",
    "trainer.stop_signals=[SIGKILL]": "'SIGKILL' is not a signal that can be caught",
    "trainer.stop_signals=[SIGFOO]": "'SIGFOO' is not a signal that can be caught",
    "model.shortcut_scale=-1": "model.shortcut_scale=-1 must be a finite number > 0",
    "model.residual_scale=0": "model.residual_scale=0 must be a finite number > 0",
    "model.dropout_rate=1": "model.dropout_rate=1 must be a finite number in [0, 1)",
    "model.gate_bias=nan": "model.gate_bias=nan must be a finite number",
    "model.checkpointing=2": "model.checkpointing=2 must be true or false",
    "trainer.precision=amp": "trainer.precision='amp' must be auto, fp32, bf16, fp16",
    "trainer.compile=yes": "trainer.compile='yes' must be auto, true or false",
    "+trainer.thread=2": "trainer.thread is not a setting of resnet-train; did you mean "
    "trainer.threads?",
    "+lr=0.1": "lr is not a setting of resnet-train",
    "+optim.betas=1": "optim has no setting betas; its settings are lr",
}


@pytest.mark.parametrize("override", sorted(BAD))
def test_a_bad_value_is_named_with_what_is_allowed(override):
    with pytest.raises(UserError) as e:
        arguments(load(override))
    assert BAD[override] in str(e.value)


@pytest.mark.parametrize(
    "override",
    [
        "data.val_split=5000",
        "schedule.milestones=[]",
        "schedule.milestones=[100000]",
        "trainer.threads=null",
        "trainer.stop_signals=[TERM,USR2]",
        "model.shortcut_scale=0.5",
        "schedule.gamma=1",
        "optim.momentum=0",
        "trainer.device=cuda:1",
        "trainer.compile=false",
    ],
)
def test_values_at_the_edges_are_accepted(override):
    arguments(load(override))  # a milestone past the end never applies, as in a short trial


def test_image_folder_settings_are_checked_too():
    with pytest.raises(UserError, match="data.workers=-1 must be a whole number >= 0"):
        arguments(load("data=imagenet", "data.root=/x", "data.workers=-1"))
    with pytest.raises(UserError, match="data.root must be given"):
        arguments(load("data=imagenet"))


TYPOS = {
    "modle=resnet20": "did you mean model?",
    "model.dpeth=20": "did you mean model.depth?",
    "trainer.thread=2": "did you mean trainer.threads?",
    "optim.momentun=0.9": "did you mean optim.momentum?",
    "shortcutcase=conv1x1": "did you mean shortcut_case?",
    "experimnt=r1_cifar": "did you mean experiment?",
    "model=resnet21": "model has no option resnet21; did you mean resnet",
    "model=resnet20,resnet65": "model has no option resnet65; did you mean resnet56?",
    "experiment=r1_cifr": "experiment has no option r1_cifr; did you mean r1_cifar?",
}


@pytest.mark.parametrize("arg", sorted(TYPOS))
def test_a_typo_names_the_close_key(arg):
    with pytest.raises(UserError) as e:
        check_overrides([arg])
    message = str(e.value)
    assert TYPOS[arg] in message and "+" + arg.split("=")[0] not in message


def test_what_hydra_reads_passes_the_typo_check():
    check_overrides(
        [
            "-m",
            "--cfg",
            "job",
            "model=resnet20,resnet56",
            "trainer.seed=0,1,2",
            "data=imagenet",
            "data.root=/data",
            "data.crop_size=32",
            "schedule.epochs=2",
            "shortcut_case=conv1x1",
            "experiment=r1_cifar",
            "hydra.run.dir=outputs/x",
            "hydra/launcher=slurm",
            "+optim.dampening=0",
            "~tags",
            "tags=[a]",
            "model.depth=8",
        ],
    )


def test_a_users_own_config_folder_adds_options(tmp_path):
    """--config-dir: a user's experiment files, without editing the package."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\ntags: [mine]\n")
    with pytest.raises(UserError, match="experiment has no option mine"):
        check_overrides(["experiment=mine"])
    for flags in (
        ["--config-dir", str(tmp_path)],
        [f"--config-dir={tmp_path}"],
        ["-cd", str(tmp_path)],
    ):
        check_overrides([*flags, "experiment=mine", "experiment=r1_cifar"])
    with pytest.raises(UserError, match="no such folder"):
        check_overrides(["--config-dir", str(tmp_path / "nope"), "experiment=mine"])
