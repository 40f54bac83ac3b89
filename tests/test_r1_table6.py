"""[R1] table 6 at the paper's own schedule (docs/r1_table6.md): the table beside independent
reproductions, made from runs' summaries."""

from pathlib import Path

from resnet_repro.nets.models import model_defaults
from resnet_repro.reproduction.paper import R1_TABLE6_REPRODUCTIONS
from resnet_repro.reproduction.runs import Run
from resnet_repro.reproduction.tables import make_tables


def run(depth: int, iterations: int, test_error: float, seed: int = 0) -> Run:
    config = {
        "model": model_defaults() | {"depth": depth},
        "data": {"name": "cifar10", "root": "data", "batch_size": 128},
        "optim": {"lr": 0.1},
        "schedule": {"iterations": iterations, "milestones": [iterations // 2]},
        "trainer": {"seed": seed},
    }
    metrics = [{"iteration": iterations, "test_error": test_error}]
    summary = {"iteration": iterations, "test_error": test_error}
    return Run(Path(f"r{depth}-{iterations}-{seed}"), config, metrics, summary)


def test_runs_of_the_papers_schedule_stand_beside_the_reproductions():
    text = make_tables([run(20, 64000, 9.12), run(20, 64000, 9.30, seed=1), run(32, 64000, 8.0)])
    section = text.split("at its own schedule (64000 iterations)")[1]
    assert "| ResNet-20 | cifar10 | 9.21 (2) | 8.75 | 8.27 | 7.84 |" in section
    assert "| ResNet-32 | cifar10 | 8.00 (1) | 7.51 | 7.37 | 7.54 |" in section
    for reproduction in R1_TABLE6_REPRODUCTIONS:  # each with its recipe and where it says so
        assert f"- {reproduction.name}: " in section and reproduction.source in section


def test_shorter_runs_are_not_set_beside_the_reproductions():
    text = make_tables([run(20, 1280, 32.6), run(56, 1280, 50.0)])
    assert "| ResNet-20 | 1280 | 1 | 32.60 |" in text  # [R1] table 6 itself has them
    assert "independent reproductions" not in text
