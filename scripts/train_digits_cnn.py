"""Train ``digits-cnn`` (optimizers/workloads/digits_cnn.py) on scikit-learn's digits.

AdamW + cosine decay, random ±1 pixel shifts as augmentation, fixed seed; saves fp32
safetensors (the model has ~31 k parameters) and metrics.json next to them.

    python scripts/train_digits_cnn.py [--epochs 60] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from optimizers.workloads.digits_cnn import ASSET_DIR, DigitsCNN, accuracy, digits_split  # noqa: E402


def random_shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shift each (1, 8, 8) image by -1..1 pixels in each direction (zeros enter at the border)."""
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))  # (B, 1, 10, 10)
    dy, dx = torch.randint(0, 3, (2, len(x)), generator=g)
    return torch.stack([padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8] for i in range(len(x))])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    x_train, y_train, x_test, y_test = digits_split()
    model = DigitsCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(y_train) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(y_train), generator=g)
        for i in range(0, len(perm), args.batch):
            idx = perm[i : i + args.batch]
            loss = torch.nn.functional.cross_entropy(model(random_shift(x_train[idx], g)), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1} loss {loss.item():.4f} train_acc {accuracy(model, x_train, y_train):.4f}", flush=True)
    train_s = time.time() - t0
    test_acc = accuracy(model, x_test, y_test)
    ASSET_DIR.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, ASSET_DIR / "model.safetensors")
    metrics = {
        "params": sum(p.numel() for p in model.parameters()),
        "test_accuracy": round(test_acc, 4),
        "train_accuracy": round(accuracy(model, x_train, y_train), 4),
        "train_examples": len(y_train), "test_examples": len(y_test),
        "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "seed": args.seed,
        "train_seconds": round(train_s, 1),
    }
    (ASSET_DIR / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
