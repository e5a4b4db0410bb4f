"""``digits-cnn``: a small MobileNet-style CNN (depthwise-separable blocks with BatchNorm and
ReLU, Howard et al. 2017, MobileNets) on scikit-learn's bundled 8×8 digits images: the edge
vision workload. Trained by ``scripts/train_digits_cnn.py``; judged by test accuracy."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from optimizers.workloads.base import VisionEval, VisionTrain, Workload, WorkloadError

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "digits-cnn"
WIDTHS = (32, 64, 128, 128)  # stem, then one depthwise-separable block per following width
STRIDES = (1, 2, 1)
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def depthwise_separable(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """3×3 depthwise conv (groups=c_in) + BN + ReLU, then 1×1 pointwise conv + BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class DigitsCNN(nn.Module):
    def __init__(self, widths: tuple[int, ...] = WIDTHS, strides: tuple[int, ...] = STRIDES, n_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[depthwise_separable(a, b, s) for a, b, s in zip(widths[:-1], widths[1:], strides)])
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(widths[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 8, 8)
        x = self.blocks(self.stem(x))  # (B, C, 4, 4)
        return self.classifier(self.dropout(x.mean(dim=(2, 3))))  # (B, 10)


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits, scaled to 0..1: (x_train, y_train, x_test, y_test), x (N, 1, 8, 8).

    Stratified 80/20 split with a fixed seed: the same on every machine."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(
        list(range(len(y))), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=d.target
    )
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        correct += (model(images[i : i + batch_size].to(device)).argmax(-1).cpu() == labels[i : i + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(labels)


def committed_metrics() -> dict:
    path = ASSET_DIR / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def load(device: str = "cpu") -> Workload:
    from safetensors.torch import load_file

    weights = ASSET_DIR / "model.safetensors"
    if not weights.exists():
        raise WorkloadError(f"{weights} is missing; train it with `python scripts/train_digits_cnn.py`")
    model = DigitsCNN()
    model.load_state_dict({k: v.float() for k, v in load_file(weights).items()})
    model = model.to(device).eval()
    x_train, y_train, x_test, y_test = digits_split()
    return Workload(
        name="digits-cnn",
        task="vision",
        model=model,
        eval=VisionEval(images=x_test, labels=y_test, batch_size=64),
        calibration=[x_train[i : i + 64] for i in range(0, 256, 64)],  # 4 × (64, 1, 8, 8)
        device=device,
        train=lambda: VisionTrain(x_train, y_train),
        meta={
            "family": "mobilenet",
            "input_shape": [1, 1, 8, 8],
            "classes": 10,
            "widths": list(WIDTHS),
            "committed_metrics": committed_metrics(),
        },
    )


WORKLOADS = {"digits-cnn": load}
TASK = "vision"  # what every workload of this module is (read before loading, e.g. to pick a scenario)
