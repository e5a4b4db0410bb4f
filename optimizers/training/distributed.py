"""The training loop of ``loop.py`` over ``recipe.sharding.ranks`` processes, data parallel: each
rank trains on its equal slice of every batch and gradients are averaged, so the loss curve is the
single process's up to float error. ZeRO stage 3 shards parameters, gradients and optimizer states
with FSDP2 ``fully_shard`` (Rajbhandari et al. 2020, arXiv:1910.02054; Zhao et al. 2023,
arXiv:2304.11277), one unit per decoder layer plus the root; stage 1 shards only the optimizer
states (``ZeroRedundancyOptimizer``) beside DDP's all-reduced gradients (Li et al. 2020,
arXiv:2006.15704). Ranks are real processes started by ``torch.distributed.run``: the parent ships
the workload's current weights and a JSON spec, each rank writes its figures, rank 0 the gathered
full weights and a progress line per step."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from optimizers.training.loop import TrainResult
from optimizers.training.recipe import Recipe

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 3600.0  # a whole launch: process start, imports, K steps, the gather
POLL_S = 0.2


# ---- the parent: check, ship, launch, collect ------------------------------------------------


def train_sharded(workload, recipe: Recipe, cfg, on_step: Callable[[int, int, float], None] | None = None,
                  timeout_s: float = TIMEOUT_S) -> TrainResult:
    """``loop.train`` of ``recipe`` over ``recipe.sharding.ranks`` processes; rank 0's result with its
    per-rank memory, and the trained model gathered back whole (a plain, unsharded copy of the
    workload's model) so the caller can measure it like any other."""
    from optimizers.scenarios.training import check_config

    check_config(cfg)
    sh = _check(workload, recipe, cfg)
    state = shippable_state(workload.model)
    with tempfile.TemporaryDirectory(prefix="speedbook-sharded-") as tmp:
        out = Path(tmp)
        from safetensors.torch import save_file

        save_file(state, str(out / "initial.safetensors"))
        spec = {"workload": workload.name, "device": workload.device, "recipe": dataclasses.asdict(recipe),
                "cfg": cfg.model_dump(), "out": str(out)}
        (out / "spec.json").write_text(json.dumps(spec))
        t0 = time.perf_counter()
        _launch(out, sh.ranks, on_step, timeout_s)
        wall_s = time.perf_counter() - t0
        ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(sh.ranks)]
        from safetensors.torch import load_file

        trained = load_file(str(out / "trained.safetensors"))
    return _result(workload, recipe, cfg, ranks, trained, wall_s)


def _check(workload, recipe: Recipe, cfg):
    """The fix-it refusals a launch would otherwise hit seconds later inside every rank."""
    sh = recipe.sharding
    if sh is None:
        raise ValueError("train_sharded needs recipe.sharding (stage and ranks); loop.train trains one process")
    if sh.stage not in (1, 3):
        raise ValueError(f"sharding.stage={sh.stage} is not one this loop runs: 1 (ZeroRedundancyOptimizer) "
                         "or 3 (FSDP2 fully_shard)")
    if sh.ranks < 1:
        raise ValueError(f"sharding.ranks={sh.ranks} must be at least 1")
    unit = sh.ranks * recipe.accumulation
    if cfg.batch_size % unit:
        raise ValueError(f"training.batch_size={cfg.batch_size} must split into sharding.ranks={sh.ranks} equal "
                         f"slices of accumulation={recipe.accumulation} micro-batches each; try batch_size="
                         f"{unit * max(1, round(cfg.batch_size / unit))}")
    if recipe.adapter is not None:
        raise ValueError(f"{recipe.adapter.kind} adapters are not sharded here: drop the sharding step (an adapter's "
                         "gradients and states are already small) or train the full model sharded")
    if sh.stage == 1 and recipe.optimizer != "adamw":
        raise ValueError(f"ZeRO stage 1 shards torch AdamW's states; optimizer={recipe.optimizer} is not sharded "
                         "here: use adamw with stage 1, or stage 3")
    if workload.device.startswith("cuda") and torch.cuda.device_count() < sh.ranks:
        raise ValueError(f"sharding.ranks={sh.ranks} on CUDA needs one GPU per rank (NCCL); this machine has "
                         f"{torch.cuda.device_count()}: lower ranks to {max(1, torch.cuda.device_count())}")
    return sh


def shippable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU clones safetensors can write (tied weights stored
    twice, each rank ties them again on load); refuses anything that is not a plain dense tensor."""
    quant = next((n for n, m in model.named_modules() if type(m).__name__.startswith("QuantLinear")), None)
    if quant is not None:
        raise ValueError(f"{quant} is a {type(model.get_submodule(quant)).__name__} (packed quantized weights): "
                         "fsdp/zero shard a plain float model; put quantizers after the training steps")
    state = {}
    with torch.inference_mode(False):
        for name, t in model.state_dict().items():
            if type(t) not in (torch.Tensor, nn.Parameter) or t.is_quantized or t.layout != torch.strided:
                what = f"{type(t).__name__} ({t.dtype})" if torch.is_tensor(t) else type(t).__name__
                raise ValueError(f"{name} is a {what}, not a plain tensor: fsdp/zero shard a "
                                 "plain float model; put quantizers after the training steps")
            state[name] = t.detach().to("cpu", copy=True).contiguous()
    return state


def _launch(out: Path, ranks: int, on_step, timeout_s: float) -> None:
    """``torch.distributed.run --standalone`` (a free local port) over ``ranks`` processes of this
    module, polling rank 0's progress file for ``on_step``. Each rank gets 1/ranks of this process's
    threads: the launch uses the cores the single process would."""
    threads = max(1, torch.get_num_threads() // ranks)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "SPEEDBOOK_RANK_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
           "-m", "optimizers.training.distributed", str(out / "spec.json")]
    progress, seen = out / "progress.txt", 0
    with open(out / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                done = proc.poll() is not None
                seen = _report(progress, seen, on_step)
                if done:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {ranks}-rank training launch ran past {timeout_s:g} s and was stopped"
                                       + _tail(out))
                time.sleep(POLL_S)
        except BaseException:
            _stop(proc)
            raise
    if proc.returncode:
        refusal = [json.loads(p.read_text()) for p in sorted(out.glob("error*.json"))]
        if refusal and refusal[0]["type"] == "ValueError":
            raise ValueError(refusal[0]["message"])
        raise RuntimeError(f"the {ranks}-rank training launch exited with {proc.returncode}" + _tail(out))


def _report(progress: Path, seen: int, on_step) -> int:
    """Call ``on_step`` for each whole line rank 0 appended since byte ``seen``; the new offset."""
    if not progress.exists():
        return seen
    data = progress.read_bytes()[seen:]
    whole = data[: data.rfind(b"\n") + 1]
    for line in whole.decode().splitlines():
        k, n, loss = line.split()
        if on_step is not None:
            on_step(int(k), int(n), float(loss))
    return seen + len(whole)


def _stop(proc: subprocess.Popen) -> None:
    """End the launcher and its ranks (its own session: only what this launch started)."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(out: Path, lines: int = 30) -> str:
    text = (out / "stderr.txt").read_text(errors="replace") if (out / "stderr.txt").exists() else ""
    return ":\n" + "\n".join(text.splitlines()[-lines:]) if text.strip() else " (no output)"


def _result(workload, recipe: Recipe, cfg, ranks: list[dict[str, Any]], trained: dict[str, torch.Tensor],
            wall_s: float) -> TrainResult:
    """Rank 0's figures around the gathered model, loaded into a prepared copy of the workload's."""
    from optimizers.training import memory as mem
    from optimizers.training.loop import prepare

    r0, sh = ranks[0], recipe.sharding
    model = prepare(workload.model, dataclasses.replace(recipe, sharding=None), workload.task)
    model.load_state_dict(trained, strict=True)
    peak = {k: max(r["memory"][k] for r in ranks) for k in r0["memory"]}
    backend = "nccl, CUDA" if workload.device.startswith("cuda") else "gloo, CPU"
    kind = "FSDP2 fully_shard per decoder layer + root" if sh.stage == 3 else "ZeroRedundancyOptimizer + DDP"
    notes = [*r0["notes"],
             f"ZeRO-{sh.stage} ({kind}): per-rank memory of rank 0 of {sh.ranks} ({backend}); the most on any rank: "
             + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in peak.items()),
             f"{sh.ranks} rank processes with {r0['threads']} thread(s) each: the cores of the single process; "
             f"the launch took {wall_s:.1f} s (process start and imports included, not in the step times)"]
    if sh.stage == 3:
        notes.append("a rank's activations include the full parameters FSDP all-gathers for the layer running "
                     "(and the root's, held through the forward)")
    elif cfg.warmup < 2:
        notes.append(f"DDP rebuilds its gradient buckets in the second step's forward: with warmup={cfg.warmup} the "
                     "profiled step's activations include them; warmup=2 leaves them out")
    count = workload.meta.get("param_count") or mem.trainable_params(workload.model)[1]
    return TrainResult(model, r0["losses"], r0["step_ms"], r0["tokens_per_step"], r0["memory"], r0["trainable"],
                       count, eval_loss=r0["eval_loss"], eval_loss_before=r0["eval_loss_before"], notes=notes)


# ---- one rank ----------------------------------------------------------------------------------


def local_bytes(tensors: Any) -> int:
    """Bytes this rank holds for ``tensors``: a DTensor by its local shard, each tensor by its own
    elements. Not ``measure.tensors_bytes``: FSDP2's sharded gradients are views into one
    reduce-scatter buffer, which that count (shared storage once) would take for one tensor."""
    from torch.distributed.tensor import DTensor

    from optimizers.measure import tensors_bytes

    seen: set[tuple[int, int, int]] = set()
    total = 0
    for t in tensors:
        if not torch.is_tensor(t):
            continue
        t = t.to_local() if isinstance(t, DTensor) else t
        if type(t) not in (torch.Tensor, nn.Parameter):  # torchao's 8-bit states: their codes and scales
            total += tensors_bytes([t])
            continue
        key = (t.data_ptr(), t.numel(), t.dtype.itemsize)
        if key not in seen:  # a tied weight once
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def local_memory(model: nn.Module, opt: torch.optim.Optimizer, measured: dict[str, int],
                 buckets: bool = False) -> dict[str, int]:
    """``measured`` (the loop's probed step) with params, grads and optimizer states as this rank's
    local bytes. The loop's peak is params + states + the step's rise; it moves by the params'
    correction, and by the gradients when they are views into DDP's buckets (``buckets``), which
    stay allocated between steps and so are live before the rise begins."""
    inner = getattr(opt, "optim", opt)  # ZeroRedundancyOptimizer keeps its partition's states in .optim
    params = local_bytes(model.state_dict().values())
    grads = local_bytes([p.grad for p in model.parameters() if p.grad is not None])
    out = dict(measured)
    out |= {"params": params, "grads": grads,
            "optimizer": local_bytes([t for s in inner.state.values() for t in s.values()])}
    out["peak"] = measured["peak"] - measured["params"] + params + (grads if buckets else 0)
    return out


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks to shard one by one: modules whose class the model lists in
    ``_no_split_modules`` (transformers' own name for them); none for a model without that list."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if m is not model and type(m).__name__ in names]


def _rank_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    rank = int(os.environ["RANK"])
    try:
        _rank_train(spec, out, rank)
    except Exception as e:
        (out / f"error{rank}.json").write_text(json.dumps({"type": type(e).__name__, "message": str(e)}))
        raise


def _rank_train(spec: dict[str, Any], out: Path, rank: int) -> None:
    import torch.distributed as dist
    from safetensors.torch import load_file, save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from optimizers.scenarios.training import TrainingConfig
    from optimizers.training import loop
    from optimizers.workloads import load_workload

    world, local = int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    threads = int(os.environ.get("SPEEDBOOK_RANK_THREADS", "1"))
    torch.set_num_threads(threads)
    cuda = spec["device"].startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        wl = load_workload(spec["workload"], f"cuda:{local}" if cuda else "cpu")
        shipped = load_file(str(out / "initial.safetensors"), device=wl.device)
        try:
            wl.model.load_state_dict(shipped, strict=True)
        except RuntimeError as e:
            raise ValueError(f"the model to train no longer fits a fresh {spec['workload']!r} ({str(e)[:300]}): "
                             "fsdp/zero shard a plain float model of the workload's own architecture; put "
                             "quantizers and other steps that change its modules after the training steps") from e
        recipe = Recipe.of({"training": spec["recipe"]})
        stage, cfg = recipe.sharding.stage, TrainingConfig(**spec["cfg"])
        single = dataclasses.replace(recipe, sharding=None)
        held: dict[str, Any] = {}
        wrap, make_opt = (_stage3(held, wl.device, world, recipe.optimizer, cfg.lr) if stage == 3
                          else _stage1(held, wl.device, cfg.lr))

        def on_step(k: int, n: int, loss: float) -> None:  # rank 0's line per step, polled by the parent
            if rank == 0:
                with open(out / "progress.txt", "a") as f:
                    f.write(f"{k} {n} {loss!r}\n")

        result = loop.train(wl, single, cfg, on_step=on_step, rank=rank, world=world, wrap=wrap, make_opt=make_opt)
        model = held["model"]
        if stage == 3:
            for m in model.modules():
                if hasattr(m, "reshard"):  # a no-grad eval forward leaves the root unsharded
                    m.reshard()
        memory = local_memory(model, held["opt"], result.memory, buckets=stage == 1)
        if stage == 3:
            full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            full = {k: v.detach().cpu() for k, v in model.module.state_dict().items()}
        if rank == 0:
            save_file({k: v.contiguous().clone() for k, v in full.items()}, str(out / "trained.safetensors"))
        figures = {"losses": result.losses, "step_ms": result.step_ms, "tokens_per_step": result.tokens_per_step,
                   "memory": memory, "trainable": result.trainable, "eval_loss": result.eval_loss,
                   "eval_loss_before": result.eval_loss_before, "notes": result.notes, "threads": threads}
        (out / f"rank{rank}.json").write_text(json.dumps(figures))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _stage3(held: dict[str, Any], device: str, world: int, optimizer: str, lr: float):
    """FSDP2: each decoder layer its own unit (its parameters gathered only while it runs), then
    the root (embeddings, final norm, head)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cuda" if device.startswith("cuda") else "cpu", (world,))

    def wrap(model: nn.Module) -> nn.Module:
        for layer in decoder_layers(model):
            fully_shard(layer, mesh=mesh)
        held["model"] = fully_shard(model, mesh=mesh)
        return model

    def make_opt(params):
        from optimizers.training.loop import make_optimizer

        held["opt"] = make_optimizer(optimizer, params, lr, device)
        return held["opt"]

    return wrap, make_opt


def _stage1(held: dict[str, Any], device: str, lr: float):
    """DDP all-reduces whole gradients; ``ZeroRedundancyOptimizer`` keeps each rank's partition
    of the AdamW states and broadcasts the parameters it updated."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    def wrap(model: nn.Module) -> nn.Module:
        held["model"] = DDP(model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None,
                             gradient_as_bucket_view=True)
        return held["model"]

    def make_opt(params):
        held["opt"] = ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.AdamW, lr=lr, weight_decay=0.0)
        return held["opt"]

    return wrap, make_opt


if __name__ == "__main__":
    _rank_main(sys.argv[1])
