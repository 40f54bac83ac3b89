import pytest

from resnet_repro.training.schedule import StepSchedule


def test_paper_schedule():
    s = StepSchedule(lr=0.1)  # [R1] 4.2
    assert s(0) == 0.1 and s(31999) == 0.1
    assert s(32000) == pytest.approx(0.01) and s(47999) == pytest.approx(0.01)
    assert s(48000) == pytest.approx(0.001) and s(63999) == pytest.approx(0.001)
    assert s.iterations == 64000


def test_warmup_then_back_to_full_lr():
    s = StepSchedule(lr=0.1, warmup_iterations=400)  # ResNet-110, [R1] 4.2 and [R2]
    assert s(0) == 0.01 and s(399) == 0.01
    assert s(400) == 0.1 and s(32000) == pytest.approx(0.01)
