"""Kernel lab jobs: a request (kernel, shape, dtype, device) becomes a KernelBenchmark row and a
``kernel_bench`` task; a GPU worker times the kernel against the device's measured roofline
(ceilings measured once per device and stored), a CPU worker runs it under Triton's interpreter
as a correctness check only (its timings are never speed figures)."""
from __future__ import annotations

import inspect
import os
import traceback
from typing import Any

from sqlalchemy import select, update

from db.models import DeviceCeiling, KernelBenchmark, utcnow
from db.session import session_scope

DTYPES = ("float32", "float16", "bfloat16")
INTERPRETER_MAX_ELEMENTS = 1 << 17  # the interpreter runs kernels in numpy: keep checks to seconds


def bench_params(kernel: str) -> dict[str, Any]:
    """The shape parameters of ``kernels.<kernel>.bench`` with their defaults (UI renders inputs)."""
    from kernels import load

    sig = inspect.signature(load(kernel).bench)
    return {n: p.default for n, p in sig.parameters.items() if n not in ("dtype", "device")}


def _elements(params: dict[str, Any]) -> int:
    n = 1
    for k, v in params.items():
        if isinstance(v, int) and not isinstance(v, bool) and k not in ("group_size", "h_kv"):
            n *= max(v, 1)
    return n


def validate(kernel: str, params: dict[str, Any], dtype: str, device: str) -> dict[str, Any]:
    from kernels import KERNELS

    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is unknown; choose one of {', '.join(KERNELS)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} is not valid; choose cpu (interpreter check) or cuda (timing)")
    allowed = bench_params(kernel)
    unknown = set(params) - set(allowed)
    if unknown:
        raise ValueError(f"{kernel} has no parameter(s) {sorted(unknown)}; valid: {sorted(allowed)}")
    merged = {**allowed, **params}
    for k, v in merged.items():
        if isinstance(allowed[k], int) and not isinstance(allowed[k], bool) and (not isinstance(v, int) or v <= 0):
            raise ValueError(f"{k}={v!r} must be a positive integer")
    if device == "cpu" and _elements(merged) > INTERPRETER_MAX_ELEMENTS:
        raise ValueError(
            f"shape {merged} is too large for Triton's interpreter on CPU ({_elements(merged):,} elements > "
            f"{INTERPRETER_MAX_ELEMENTS:,}); use small shapes for a correctness check, or a cuda device for timing"
        )
    return merged


def submit(kernel: str, params: dict[str, Any], dtype: str, device: str, team_id: int = 1, enqueue: bool = True) -> int:
    merged = validate(kernel, params, dtype, device)
    with session_scope() as s:
        row = KernelBenchmark(team_id=team_id, kernel=kernel, shape=_shape_key(merged), dtype=dtype, device=device,
                              mode="interpreter" if device == "cpu" else "bench", status="queued", row={"params": merged})
        s.add(row)
        s.flush()
        bench_id = row.id
    if enqueue:
        from jobs.celery_app import PUBLISH_RETRY, app, queue_for

        app.send_task("speedbook.kernel_bench", args=[bench_id], queue=queue_for(device), retry=True,
                      retry_policy=PUBLISH_RETRY)
    return bench_id


def cancel(bench_id: int, team_id: int | None = None) -> str:
    """Cancel a request that no worker has taken yet (a worker only takes ``queued`` rows)."""
    with session_scope() as s:
        q = update(KernelBenchmark).where(KernelBenchmark.id == bench_id, KernelBenchmark.status == "queued")
        if team_id is not None:
            q = q.where(KernelBenchmark.team_id == team_id)
        done = s.execute(q.values(status="cancelled", error="cancelled by request", finished_at=utcnow())).rowcount
    return f"Kernel request #{bench_id} cancelled." if done else \
        f"Kernel request #{bench_id} is no longer queued (a worker took it, or it ended): nothing to cancel."


def _shape_key(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


def ceilings_for(device: str) -> dict[str, Any]:
    """The device's measured ceilings, measuring and storing them the first time."""
    import torch

    from kernels.roofline import measure_ceilings

    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    with session_scope() as s:
        row = s.scalars(select(DeviceCeiling).where(DeviceCeiling.device_name == name)).first()
        if row is not None:
            return {"copy_gb_per_s": row.copy_gb_per_s, "matmul_tflop_per_s": row.matmul_tflop_per_s, "device": name}
    c = measure_ceilings(device)
    with session_scope() as s:
        s.add(DeviceCeiling(device_name=name, copy_gb_per_s=c["copy_gb_per_s"], matmul_tflop_per_s=c["matmul_tflop_per_s"]))
    return c


def execute(bench_id: int, worker: str = "local") -> str:
    import torch

    with session_scope() as s:
        claimed = s.execute(update(KernelBenchmark).where(KernelBenchmark.id == bench_id, KernelBenchmark.status == "queued")
                            .values(status="running", worker=worker)).rowcount
        if not claimed:
            return "not queued"
        req = s.get(KernelBenchmark, bench_id)
        kernel, dtype, device, params = req.kernel, req.dtype, req.device, dict(req.row["params"])
    try:
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("this worker has no CUDA GPU; send kernel timings to a gpu-queue worker")
        if device == "cpu":
            os.environ["TRITON_INTERPRET"] = "1"  # read when the kernel is first built in this process
        from kernels import load

        row = load(kernel).bench(**params, dtype=getattr(torch, dtype), device=device)
        row["params"] = params
        if device == "cuda":
            from kernels.roofline import percent_of_roofline

            ceilings = ceilings_for(device)
            row |= percent_of_roofline(row, ceilings) | {"ceilings": ceilings}
        status, error = "succeeded", None
    except Exception as err:
        row, status = {"params": params}, "failed"
        error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:2000]
        traceback.print_exc()
    with session_scope() as s:
        req = s.get(KernelBenchmark, bench_id)
        req.row, req.status, req.error, req.finished_at = row, status, error, utcnow()
    return status


def recent(team_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
    with session_scope() as s:
        q = select(KernelBenchmark).order_by(KernelBenchmark.id.desc()).limit(limit)
        if team_id is not None:
            q = q.where(KernelBenchmark.team_id == team_id)
        return [
            {**(r.row or {}), "id": r.id, "kernel": r.kernel, "shape": r.shape, "dtype": r.dtype, "device": r.device,
             "mode": r.mode, "status": r.status, "error": r.error, "worker": r.worker, "created_at": r.created_at}
            for r in s.scalars(q)
        ]


def stored_ceilings() -> list[dict[str, Any]]:
    with session_scope() as s:
        return [{"device": r.device_name, "copy_gb_per_s": r.copy_gb_per_s, **{f"matmul_tflop_per_s_{k}": v for k, v in r.matmul_tflop_per_s.items()},
                 "measured_at": r.measured_at} for r in s.scalars(select(DeviceCeiling))]
