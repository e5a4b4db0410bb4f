"""One-shot GPU check of every kernel in `kernels/`: build it, check it against its fp32 reference with the
house bound (err <= 2 * err(eager same dtype) + atol), time it at realistic sizes beside same-run torch
baselines, and place it under the roofline measured on the same device (kernels/roofline.py).

    python benchmarks/gpu_check.py            # NVIDIA GPU; ~2-4 min; JSON to $OUT/gpu_check.json if OUT is set
    python benchmarks/gpu_check.py --smoke    # CPU, tiny shapes, Triton interpreter: checks this script's plumbing

Exit status: 0 when every case ran and met the bound, 1 otherwise, 2 when there is no CUDA GPU / Triton.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

if "--smoke" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # must be set before the first triton import
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kernels import (  # noqa: E402
    _common, flash_attention, matmul_w4a16, matmul_w8a16, rmsnorm, roofline, softmax, swiglu,
)

TIME_BUDGET_S = 480  # skip the remaining cases past this, so the run ends well under 10 minutes
EAGER_ATTENTION_MAX_BYTES = 8 << 30  # eager attention baseline only when its (B, H, T_q, T_k) scores fit this


@dataclass
class Case:
    """One kernel at one size: `bench(**args)` plus torch baselines timed on the same inputs."""

    kernel: str  # name in kernels.KERNELS
    bench: Callable[..., dict]  # the module's bench()
    args: dict  # shape arguments of bench() (dtype and device are added)
    baselines: Callable[[torch.dtype, torch.device], dict[str, Callable[[], object]]] = field(repr=False)


# ---------------------------------------------------------------------------------------------
# Baselines: the same op in plain torch, on the same inputs as the kernel's bench()
# ---------------------------------------------------------------------------------------------
def _rmsnorm_baselines(rows, n):
    def make(dtype, device):
        x, w = rmsnorm.example_inputs(rows, n, dtype, device)
        return {"torch_rms_norm": lambda: F.rms_norm(x, (n,), w, 1e-6)}

    return make


def _softmax_baselines(rows, n):
    def make(dtype, device):
        x = softmax.example_inputs(rows, n, dtype, device)
        return {"torch_softmax": lambda: torch.softmax(x, dim=-1)}

    return make


def _swiglu_baselines(rows, n):
    def make(dtype, device):
        gate, up = swiglu.example_inputs(rows, n, dtype, device)
        return {"torch_eager": lambda: F.silu(gate) * up}

    return make


def _dense_matmul_baselines(m, n, k):
    """A dense (N, K) weight in the activation dtype: what weight-only quantization must beat."""

    def make(dtype, device):
        x = _common.random_tensor((m, k), dtype, device, seed=0)
        w = _common.random_tensor((n, k), dtype, device, seed=1, scale=k**-0.5)
        return {f"torch_{str(dtype).replace('torch.', '')}_matmul": lambda: F.linear(x, w)}

    return make


def _attention_baselines(b, h, h_kv, t, d, causal, t_q):
    def make(dtype, device):
        q, k, v = flash_attention.example_inputs(b, h, h_kv, t_q, t, d, dtype, device)
        mask = None
        if causal and t_q != t:  # queries are the last t_q positions: SDPA's is_causal aligns top-left
            mask = ~flash_attention.causal_mask(t_q, t, device)
        sdpa_causal = causal and t_q == t
        fns = {
            "torch_sdpa": lambda: F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=sdpa_causal, enable_gqa=True
            )
        }
        if b * h * t_q * t * _common.element_size(dtype) <= EAGER_ATTENTION_MAX_BYTES:
            fns["torch_eager"] = lambda: flash_attention.reference(q, k, v, causal, upcast=False)
        return fns

    return make


# ---------------------------------------------------------------------------------------------
# Case lists
# ---------------------------------------------------------------------------------------------
def _row_cases(rows, n):
    return [
        Case("rmsnorm", rmsnorm.bench, {"rows": rows, "n": n}, _rmsnorm_baselines(rows, n)),
        Case("softmax", softmax.bench, {"rows": rows, "n": n}, _softmax_baselines(rows, n)),
        Case("swiglu", swiglu.bench, {"rows": rows, "n": n}, _swiglu_baselines(rows, n)),
    ]


def _matmul_cases(ms, sizes, group_size):
    cases = []
    for n, k in sizes:
        for m in ms:
            cases.append(
                Case("matmul_w8a16", matmul_w8a16.bench, {"m": m, "n": n, "k": k}, _dense_matmul_baselines(m, n, k))
            )
            cases.append(
                Case("matmul_w4a16", matmul_w4a16.bench, {"m": m, "n": n, "k": k, "group_size": group_size},
                     _dense_matmul_baselines(m, n, k))
            )
    return cases


def _attention_cases(shapes, h, h_kv, d):
    """shapes: (B, T_k, T_q, causal)."""
    return [
        Case("flash_attention", flash_attention.bench,
             {"b": b, "h": h, "h_kv": h_kv, "t": t, "d": d, "causal": causal, "t_q": t_q},
             _attention_baselines(b, h, h_kv, t, d, causal, t_q))
        for b, t, t_q, causal in shapes
    ]


def gpu_cases() -> list[Case]:
    attention = [(b, t, t, True) for b in (1, 4) for t in (1024, 4096, 8192)]
    attention += [(1, 4096, 4096, False), (4, 8192, 1, True), (1, 8192, 512, True)]  # full; decode; chunked prefill
    return (
        _row_cases(8192, 8192)
        + _matmul_cases((1, 16), ((4096, 4096), (8192, 8192)), 128)
        + _attention_cases(attention, 32, 8, 128)
    )


def smoke_cases() -> list[Case]:
    return (
        _row_cases(37, 781)
        + _matmul_cases((1, 16), ((67, 256),), 64)
        + _attention_cases([(1, 67, 67, True), (1, 67, 1, True), (2, 37, 37, False)], 4, 2, 32)
    )


# ---------------------------------------------------------------------------------------------
# Running, reporting
# ---------------------------------------------------------------------------------------------
def run_case(case: Case, dtype: torch.dtype, device: torch.device, ceilings: dict) -> dict:
    """bench() the kernel, time its baselines on the same inputs, add roofline % and speed ratios."""
    row = case.bench(**case.args, dtype=dtype, device=device)
    row.update(roofline.percent_of_roofline(row, ceilings))
    row["baselines"] = {}
    for name, fn in case.baselines(dtype, device).items():
        ms, timing = _common.time_ms(fn, device, triton_kernel=False)
        row["baselines"][name] = {"ms": ms, "speedup": ms / row["ms"], "timing": timing}
    return row


def run(cases: list[Case], dtype_for: Callable[[str], torch.dtype], device: torch.device, ceilings: dict) -> list[dict]:
    rows, start = [], time.monotonic()
    for case in cases:
        label = {"kernel": case.kernel, "shape": list(case.args.values())}
        if time.monotonic() - start > TIME_BUDGET_S:
            rows.append({**label, "error": f"skipped: past the {TIME_BUDGET_S} s budget"})
            continue
        try:
            rows.append(run_case(case, dtype_for(case.kernel), device, ceilings))
        except Exception as exc:  # one broken case must not hide the others' numbers
            rows.append({**label, "error": f"{type(exc).__name__}: {exc}"})
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(format_row(rows[-1]), flush=True)
    return rows


HEADER = (
    f"{'kernel':<16}{'shape':<34}{'dtype':<9}{'ms':>9}{'GB/s':>9}{'TFLOP/s':>9}{'bound':>8}{'%roof':>7}"
    f"{'max_err':>10}{'eager_err':>10}{'ok':>4}  baselines (ms, kernel speedup)"
)


def format_row(row: dict) -> str:
    if "error" in row:
        return f"{row['kernel']:<16}{str(row['shape']):<34}ERROR {row['error']}"
    base = ", ".join(f"{n} {b['ms']:.3f} ms ({b['speedup']:.2f}x)" for n, b in row["baselines"].items())
    return (
        f"{row['kernel']:<16}{str(row['shape']):<34}{row['dtype']:<9}{row['ms']:>9.3f}{row['gb_per_s']:>9.3g}"
        f"{row['tflop_per_s']:>9.3g}{row['bound']:>8}{row['pct_of_roofline']:>6.0f}%{row['max_abs_err']:>10.2e}"
        f"{row['eager_max_abs_err']:>10.2e}{'yes' if row['bound_ok'] else 'NO':>4}  {base}"
    )


SPARSE_24_SHAPES = ((32, 4096, 4096), (2048, 4096, 4096), (32, 8192, 8192), (2048, 8192, 8192), (2048, 4096, 14336))


def sparse_24_rows(device: torch.device, dtype: torch.dtype = torch.float16) -> list[dict]:
    """2:4 semi-structured sparse GEMM (``torch.sparse.to_sparse_semi_structured``, sparse tensor
    cores from compute capability 8.0) against the dense GEMM of the same masked weight, x (M, K) ·
    Wᵀ (N, K): the speed-up the nm_sparsity technique's CUDA path gets (issue 15's goal: ≥ 1.3× on
    large Linears), and the largest difference between the two results."""
    from torch.sparse import to_sparse_semi_structured

    from optimizers.sparsity import nm_mask

    rows = []
    for m, n, k in SPARSE_24_SHAPES:
        label = {"kernel": "sparse_2_4", "shape": [m, n, k]}
        try:
            w = torch.randn(n, k, device=device, dtype=dtype)
            w = w * nm_mask(w.abs().float(), 2, 4).to(dtype)
            x = torch.randn(m, k, device=device, dtype=dtype)
            ws = to_sparse_semi_structured(w)
            dense_ms, _ = _common.time_ms(lambda: F.linear(x, w), device, triton_kernel=False)
            sparse_ms, timing = _common.time_ms(lambda: F.linear(x, ws), device, triton_kernel=False)
            err = float((F.linear(x, ws).float() - F.linear(x, w).float()).abs().max())
            rows.append({**label, "dtype": str(dtype).removeprefix("torch."), "dense_ms": dense_ms,
                         "sparse_ms": sparse_ms, "speedup": dense_ms / sparse_ms, "max_abs_diff": err, "timing": timing})
        except Exception as exc:  # noqa: BLE001 - an unsupported GPU or shape is a row, not a crash
            rows.append({**label, "error": f"{type(exc).__name__}: {exc}"})
        r = rows[-1]
        print(f"sparse_2_4      {str(r['shape']):<34}" + (f"ERROR {r['error']}" if "error" in r else
              f"dense {r['dense_ms']:.3f} ms, 2:4 {r['sparse_ms']:.3f} ms: {r['speedup']:.2f}x "
              f"(max |diff| {r['max_abs_diff']:.2e})"), flush=True)
    return rows


def environment(device: torch.device) -> dict:
    triton, _ = _common.load_triton()
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu:{os.cpu_count()}",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "interpreter": _common.interpreter_active(),
        "date": datetime.date.today().isoformat(),
    }


def preflight(smoke: bool) -> torch.device:
    """The device to run on, or exit 2 with a message saying what is missing."""
    try:
        _common.load_triton()
    except RuntimeError as exc:
        sys.exit(f"gpu_check: {exc}")
    if smoke:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False). Run this on an NVIDIA GPU "
            "with a CUDA build of torch, or pass --smoke for a tiny CPU check under Triton's interpreter.",
            file=sys.stderr,
        )
        sys.exit(2)
    return torch.device("cuda")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1")
    args = parser.parse_args(argv)
    device = preflight(args.smoke)
    env = environment(device)
    print(json.dumps(env))
    ceilings = roofline.measure_ceilings(device)
    print(
        f"ceilings on {ceilings['device']}: copy {ceilings['copy_gb_per_s']:.0f} GB/s, matmul "
        f"bf16 {ceilings['matmul_tflop_per_s']['bf16']:.3g} / fp32 {ceilings['matmul_tflop_per_s']['fp32']:.3g} TFLOP/s"
    )
    # bf16 on GPU; fp16 in the smoke run, since the interpreter cannot run bf16 tl.dot
    dtype_for = (lambda kernel: torch.float16) if args.smoke else (lambda kernel: torch.bfloat16)
    print(HEADER)
    rows = run(smoke_cases() if args.smoke else gpu_cases(), dtype_for, device, ceilings)
    report = {**env, "ceilings": ceilings, "rows": rows,
              "sparse_2_4": [] if args.smoke else sparse_24_rows(device)}
    if os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / ("gpu_check_smoke.json" if args.smoke else "gpu_check.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
        print(f"wrote {path}")
    failed = [r for r in rows if "error" in r or not r["bound_ok"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} cases ran and met the error bound")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
