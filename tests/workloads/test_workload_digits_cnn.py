import torch

from optimizers.workloads import load_workload
from optimizers.workloads.base import VisionEval
from optimizers.workloads.digits_cnn import DigitsCNN, accuracy, digits_split


def test_digits_cnn_loads_and_keeps_its_committed_accuracy():
    wl = load_workload("digits-cnn")
    assert wl.task == "vision" and isinstance(wl.eval, VisionEval)
    assert wl.eval.images.shape[1:] == (1, 8, 8) and len(wl.eval.labels) == 360
    committed = wl.meta["committed_metrics"]["test_accuracy"]
    acc = accuracy(wl.model, wl.eval.images, wl.eval.labels)
    assert acc >= committed - 0.005 and acc >= 0.97, (acc, committed)
    assert wl.calibration[0].shape == (64, 1, 8, 8)


def test_split_is_deterministic_and_disjoint():
    a, b = digits_split(), digits_split()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len(a[1]) + len(a[3]) == 1797


def test_model_is_depthwise_separable():
    convs = [m for m in DigitsCNN().modules() if isinstance(m, torch.nn.Conv2d)]
    assert any(c.groups == c.in_channels > 1 for c in convs)  # depthwise
    assert any(c.kernel_size == (1, 1) for c in convs)  # pointwise
