"""The one measurement harness (DESIGN.md "Measurement"): the same protocol before and
after every step — stored bytes, peak memory, latency (median after warm-up), prefill and
decode tokens/s, quality, and fidelity against the baseline's outputs — so deltas are honest."""
from __future__ import annotations

import math
import os
import platform
import functools
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from optimizers import metrics as M
from optimizers.workloads.base import EncoderEval, LMEval, VisionEval, Workload


@dataclass
class Measurement:
    metrics: dict[str, float]
    outputs: Any = None  # reference outputs (logits / embeddings) for fidelity of later steps
    served: list[list[int]] | None = None  # serving scenario: each request's tokens, for exactness of later steps
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # how the scenario measured (engine, cache layout)
    details: dict[str, Any] = field(default_factory=dict)  # JSON-safe curves (the training scenario's loss curve)
    # {metric: one timed sample in ms}: what a later measurement interleaves with its own (in memory, never stored)
    timers: dict[str, Callable[[], float]] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class SpeedSettings:
    warmup: int = 3
    repeats: int = 7
    min_time_s: float = 1.0  # keep repeating short calls until this much was timed (max 200 calls)

    @classmethod
    def from_env(cls) -> "SpeedSettings":
        """``SPEEDBOOK_WARMUP`` / ``SPEEDBOOK_REPEATS`` / ``SPEEDBOOK_MIN_TIME_S`` override the
        defaults (tests use few: they check correctness, never wall-clock)."""
        return cls(
            warmup=int(os.environ.get("SPEEDBOOK_WARMUP", cls.warmup)),
            repeats=max(2, int(os.environ.get("SPEEDBOOK_REPEATS", cls.repeats))),
            min_time_s=float(os.environ.get("SPEEDBOOK_MIN_TIME_S", cls.min_time_s)),
        )


# ---------------------------------------------------------------- primitives

def stored_bytes(model: torch.nn.Module) -> int:
    """Bytes the model's state actually occupies: every tensor in the state dict (packed
    quantized weights included, also when nested in tuples), shared storage counted once."""
    with torch.inference_mode(False):  # tensor subclasses (torchao) refuse detach() in inference mode
        state = model.state_dict(keep_vars=False)
    return tensors_bytes(state.values())


def tensors_bytes(values: Any) -> int:
    """Bytes held by the tensors in ``values`` (nested tuples and lists too): a tensor subclass
    (torchao's) by what it holds, a quantized tensor with its scales, shared storage once."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if isinstance(t, (tuple, list)):
            for x in t:
                add(x)
            return
        if not isinstance(t, torch.Tensor):
            return
        if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, torch.nn.Parameter):
            for inner in t.__tensor_flatten__()[0]:  # tensor subclasses (torchao): count what they hold
                add(getattr(t, inner))
            return
        if t.is_quantized:
            if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                add(t.q_per_channel_scales())
                add(t.q_per_channel_zero_points())
            else:
                total += 16  # one float64 scale + one int64 zero point
            key = (t.data_ptr(), t.numel())
            if key not in seen:
                seen.add(key)
                total += t.numel() * t.element_size()
            return
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key in seen:
            return
        seen.add(key)
        total += t.numel() * t.element_size()

    for v in values:
        add(v)
    return total


def time_call(fn: Callable[[], Any], settings: SpeedSettings, device: str) -> list[float]:
    """Wall times in ms of ``fn`` after warm-up (synchronizing on CUDA)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(settings.warmup):
        fn()
    sync()
    times: list[float] = []
    while len(times) < settings.repeats or (sum(times) < settings.min_time_s * 1e3 and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


SAMPLE_MS = 20.0  # a timed sample of a short call repeats it until about this long: one sub-ms call is all noise


def sampler(fn: Callable[[], Any], median_ms: float, sync: Callable[[], None]) -> Callable[[], float]:
    """One timed sample of ``fn`` in ms per call: ``fn`` run back to back enough times (from its
    median) that the sample lasts about ``SAMPLE_MS``."""
    calls = max(1, math.ceil(SAMPLE_MS / max(median_ms, 1e-3)))

    def sample() -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        return (time.perf_counter() - t0) * 1e3 / calls
    return sample


def interleaved_figures(reference: Measurement, timers: dict[str, Callable[[], float]],
                        settings: SpeedSettings) -> dict[str, float]:
    """Each timed metric both measurements have, timed again as interleaved pairs of baseline and
    candidate samples, as a ratio with its bootstrap interval (``optimizers.stats``); decode time
    becomes the interval of ``decode_tokens_per_s`` (its reciprocal)."""
    from optimizers import stats

    out: dict[str, float] = {}
    pairs = max(2, settings.repeats)
    for name, candidate in timers.items():
        if name not in reference.timers:
            continue
        interval = stats.paired_ratio(*stats.interleave(reference.timers[name], candidate, pairs))
        out |= stats.figures("decode_tokens_per_s", interval.inverse()) if name == "decode_ms" \
            else stats.figures(name, interval)
    return out


def median_and_spread(times_ms: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(times_ms, n=10, method="inclusive") if len(times_ms) > 1 else [times_ms[0]] * 9
    return statistics.median(times_ms), qs[8] - qs[0]


def _allocator_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes the CPU allocator held beyond what was live when ``fn`` started: every
    allocation and free torch's profiler records (``profile_memory``), in time order. It sees
    allocations inside compiled graphs (a dispatch-mode tracker forces the eager path) and is
    indifferent to tensor-subclass parameters (torchao's)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()  # negative for a free
        peak = max(peak, live)
    return peak


def peak_memory_bytes(model: torch.nn.Module, fn: Callable[[], Any], device: str) -> int:
    """Peak bytes while running ``fn``: the model's stored bytes plus the peak of every other
    tensor alive during the call (torch's own accounting — the allocator's events through the
    profiler on CPU, the CUDA allocator's peak on GPU — never process RSS, which is unreliable
    here; see FACTS.md). Both see a compiled model's own graphs, not an eager stand-in."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return stored_bytes(model) + torch.cuda.max_memory_allocated() - base
    return stored_bytes(model) + runtime_buffer_bytes(model) + _allocator_peak_bytes(fn)


def runtime_buffer_bytes(model: torch.nn.Module) -> int:
    """Bytes of buffers a module keeps outside its state dict (e.g. the CPU int4 kernel's own
    layout of the packed weights): resident while it runs, so part of peak memory, though not
    of what is stored."""
    saved = {id(t) for t in model.state_dict(keep_vars=True).values() if isinstance(t, torch.Tensor)}
    seen: set[int] = set()
    total = 0
    for _, b in model.named_buffers():
        if b is not None and id(b) not in saved and id(b) not in seen:
            seen.add(id(b))
            total += b.numel() * b.element_size()
    return total


def environment(device: str) -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "threads_from": "SPEEDBOOK_THREADS" if os.environ.get("SPEEDBOOK_THREADS") else "the cores this process may use",
        "cpu": _cpu_model(),
        "cpu_isa": cpu_isa(),
        "host": platform.node(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        pass
    return env


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_isa() -> str:
    """The vector ISA torch dispatches to (``get_cpu_capability``) and the flags that decide
    low-bit speed (VNNI, BF16, AMX), e.g. ``AVX512 (avx2 avx512f avx512_vnni avx512_bf16)``:
    recorded with every figure, since speed-ups differ between CPUs of one kind."""
    flags = cpu_flags()
    present = " ".join(fl for fl in ISA_FLAGS if fl in flags)
    return f"{torch.backends.cpu.get_cpu_capability()}" + (f" ({present})" if present else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------- per task

def _lm_windows(ev: LMEval) -> torch.Tensor:
    ids = ev.token_ids
    starts = list(range(0, max(len(ids) - ev.window, 0) + 1, ev.stride))[: ev.max_windows]
    if not starts:
        raise ValueError(f"evaluation text has {len(ids)} tokens, fewer than window={ev.window}")
    return torch.stack([ids[s : s + ev.window] for s in starts])  # (W, window)


@torch.inference_mode()
def _lm_quality(wl: Workload, reference: Measurement | None) -> tuple[dict[str, float], torch.Tensor]:
    ev: LMEval = wl.eval  # type: ignore[assignment]
    windows = _lm_windows(ev).to(wl.device)
    nll, count, logits_all = 0.0, 0, []
    for chunk in windows.split(4):
        logits = wl.model(input_ids=chunk).logits.float()  # (b, T, V)
        lp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll -= float(lp.gather(-1, chunk[:, 1:, None]).sum())
        count += chunk[:, 1:].numel()
        logits_all.append(logits.cpu())
    logits = torch.cat(logits_all)  # (W, T, V)
    out = {"perplexity": M.perplexity_from_nll(nll, count)}
    if ev.answers:
        out["answer_accuracy"] = answer_accuracy(wl)
    if reference is not None and reference.outputs is not None:
        out |= _fidelity(reference.outputs, logits)
    return out, logits


NOT_THROUGH_CACHE = ("kl_divergence", "top1_agreement", "output_rel_error", "answer_accuracy")  # full-window / generate()


@torch.inference_mode()
def lm_kv_cache(wl: Workload, setting: dict[str, Any] | None) -> dict[str, float]:
    """KV-cache bytes for one evaluation window: the plain cache's (filled by one forward), or,
    under a ``kv_cache`` setting, the peak the quantized / sink cache held while every window was
    fed 32 tokens at a time through it — and then perplexity is that chunked one, so the cache's
    quality cost shows (chunked through a plain cache it equals the one-pass figure within 1e-4).
    Also the bytes against a 16-bit cache of the same tokens."""
    from transformers import DynamicCache

    from optimizers.decoding.kv_cache import cache_bytes, cache_factory, cache_stats
    from optimizers.scenarios.serving import kv_bytes_per_token

    ev: LMEval = wl.eval  # type: ignore[assignment]
    windows = _lm_windows(ev).to(wl.device)
    elements_16bit = kv_bytes_per_token(wl.model) // _dtype_size(wl.model) * 2 * windows.shape[1]
    if not setting:
        cache = DynamicCache(config=wl.model.config)
        wl.model(input_ids=windows[:1], cache=cache, use_cache=True)
        nbytes = float(cache_bytes(cache))
        return {"kv_cache_bytes": nbytes, "kv_cache_bytes_vs_16bit": nbytes / elements_16bit}
    stats = cache_stats(wl.model, windows, cache_factory(wl.model, setting), chunk=32)
    nbytes = float(stats["peak_cache_bytes_per_sequence"])
    return {"perplexity": stats["perplexity"], "kv_cache_bytes": nbytes, "kv_cache_bytes_vs_16bit": nbytes / elements_16bit}


def _dtype_size(model: torch.nn.Module) -> int:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32).itemsize


def answer_matches(text: str, accepted: list[str]) -> bool:
    """Whether ``text`` contains one of ``accepted`` as a whole word, ignoring case."""
    import re

    return any(re.search(rf"(?<!\w){re.escape(a.lower())}(?!\w)", text.lower()) for a in accepted)


def answer_accuracy(wl: Workload) -> float:
    """Fraction of the workload's short factual prompts whose greedy answer contains one of the
    accepted answers as a whole word (case-insensitive; "7" does not match "1977"): a task figure
    a user recognises, beside perplexity."""

    ev: LMEval = wl.eval  # type: ignore[assignment]
    right = 0
    for ids, accepted in ev.answers:
        ids = ids.to(wl.device)
        out = wl.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                max_new_tokens=ev.answer_tokens, pad_token_id=wl.tokenizer.eos_token_id)
        text = wl.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).lower()
        right += answer_matches(text, accepted)
    return right / len(ev.answers)


def _fidelity(ref_logits: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
    return {
        "kl_divergence": M.kl_divergence(ref_logits, logits),
        "top1_agreement": M.top1_agreement(ref_logits, logits),
        "output_rel_error": M.rel_error(ref_logits, logits),
    }


@torch.inference_mode()
def _lm_speed(wl: Workload, s: SpeedSettings, runtime: dict[str, Any]) -> tuple[dict[str, float], Callable[[], Any], dict]:
    ev: LMEval = wl.eval  # type: ignore[assignment]
    need = ev.prompt_len * ev.batch_size
    if len(ev.token_ids) < need:
        raise ValueError(f"prompt_len×batch_size={need} exceeds the {len(ev.token_ids)} evaluation tokens")
    prompt = ev.token_ids[:need].reshape(ev.batch_size, ev.prompt_len).to(wl.device)
    model = wl.model

    def prefill() -> Any:
        return model(input_ids=prompt, use_cache=False).logits

    kv = runtime.get("kv_cache")
    fresh = None
    if kv:
        from optimizers.decoding.kv_cache import cache_factory

        fresh = cache_factory(model, kv)

    def decode_ms() -> float:
        """Prefill into a static KV cache (untimed), then time only the greedy token-by-token loop."""
        sync()
        return greedy_decode(model, prompt, ev.decode_tokens, sync=sync, cache=fresh() if fresh else None)[1]

    sync = torch.cuda.synchronize if wl.device.startswith("cuda") else (lambda: None)
    pre_ms, spread = median_and_spread(time_call(prefill, s, wl.device))
    decode_ms()  # warm-up
    dec_times = [decode_ms() for _ in range(max(3, s.repeats // 2))]
    while sum(dec_times) < s.min_time_s * 1e3 and len(dec_times) < 50:
        dec_times.append(decode_ms())
    dec_ms = statistics.median(dec_times)
    out = {
        "latency_ms": pre_ms,
        "latency_spread_ms": spread,
        "prefill_tokens_per_s": need / (pre_ms / 1e3),
        "decode_tokens_per_s": ev.batch_size * ev.decode_tokens / (dec_ms / 1e3),
    }
    out |= decode_bandwidth(stored_bytes(model), out["decode_tokens_per_s"] / ev.batch_size, wl.device)
    if runtime.get("speculative"):  # the draft-and-verify loop, against the lean loop timed just above
        out |= _speculative_speed(wl, prompt, len(dec_times), runtime["speculative"], dec_ms, sync)
    timers = {"latency_ms": sampler(prefill, pre_ms, sync)}
    if not runtime.get("speculative"):  # the speculative rate has its own comparison (spec_speedup, same prompt)
        timers["decode_ms"] = decode_ms
    return out, prefill, timers


def greedy_decode(model: torch.nn.Module, prompt: torch.Tensor, n: int,
                  sync: Callable[[], None] = lambda: None,
                  stamps: list[float] | None = None, cache: Any = None) -> tuple[torch.Tensor, float]:
    """The lean decode loop serving engines run (gpt-fast's shape): prefill into a static KV cache
    sized for the whole sequence, then ``n`` greedy steps of one token each at fixed shapes (so a
    compiled model runs one graph at every length). Returns the ``n`` tokens (B, n) and the
    milliseconds of the ``n`` steps alone; the same loop measures the baseline and every step.
    With ``stamps`` (the serving scenario) it appends when each token became available and skips
    the last step, whose token nobody asked for; ``cache`` replaces the static cache (a quantized
    or sink cache of a ``kv_cache`` setting, which grows)."""
    from transformers import StaticCache

    b, t = prompt.shape
    cache = cache if cache is not None else StaticCache(config=model.config, max_cache_len=t + n)
    positions = torch.arange(t + n, device=prompt.device)
    out = model(input_ids=prompt, cache=cache, cache_position=positions[:t], use_cache=True)
    tok = out.logits[:, -1:].argmax(-1)
    tokens = []
    sync()
    t0 = time.perf_counter()
    for i in range(n):
        tokens.append(tok)
        if stamps is not None:
            sync()
            stamps.append(time.perf_counter())
            if i == n - 1:
                break
        out = model(input_ids=tok, cache=cache, cache_position=positions[t + i : t + i + 1], use_cache=True)
        tok = out.logits[:, -1:].argmax(-1)
    sync()
    return torch.cat(tokens, dim=1), (time.perf_counter() - t0) * 1e3


@functools.lru_cache(maxsize=4)
def copy_gb_per_s(device: str) -> float:
    """The device's measured copy bandwidth (read + write), once per process: 256 MiB on CPU so
    caches do not flatter it; the ceiling decode at batch 1 is judged against."""
    from kernels.roofline import SIZES, _copy_gb_per_s

    nbytes = 256 << 20 if not device.startswith("cuda") else SIZES["cuda"][0]
    return _copy_gb_per_s(nbytes, torch.device(device))


def decode_bandwidth(weight_bytes: float, tokens_per_s: float, device: str) -> dict[str, float]:
    """Decode at batch 1 reads every weight once per token: achieved bandwidth = stored bytes ×
    tokens/s (computed), beside the measured copy bandwidth and the fraction of it reached."""
    achieved = weight_bytes * tokens_per_s / 1e9
    ceiling = copy_gb_per_s(device)
    return {"decode_bandwidth_gb_per_s": achieved, "copy_gb_per_s": ceiling, "decode_bandwidth_fraction": achieved / ceiling}


def _speculative_speed(wl: Workload, prompt: torch.Tensor, repeats: int, setting: dict[str, Any], plain_ms: float,
                       sync: Callable[[], None]) -> dict[str, float]:
    """Decode through the lean draft-and-verify loop (``optimizers.decoding.speculative``), timed
    like the lean greedy loop whose median (``plain_ms``) was just measured on the same prompt:
    ``decode_tokens_per_s`` becomes the speculative rate (the plain one stays, as
    ``decode_tokens_per_s_plain``), with α, the mean accepted length, the cost ratio c, the measured
    speed-up and the analytical one from those, and ``greedy_match`` (1.0: identical tokens)."""
    from optimizers.decoding.speculative import analytical_speedup, speculative_greedy
    from optimizers.techniques.speculative_decoding import draft_source

    ev: LMEval = wl.eval  # type: ignore[assignment]
    if ev.batch_size != 1:
        raise ValueError(f"speculative decoding is measured at batch_size=1, not {ev.batch_size}")
    n, gamma = ev.decode_tokens, setting["gamma"]
    reference = greedy_decode(wl.model, prompt, n)[0]
    runs = []
    for i in range(repeats + 1):  # the first is warm-up
        tokens, stats, ms = speculative_greedy(wl.model, prompt, n, draft_source(wl.model, setting), gamma, sync)
        if i:
            runs.append((ms, stats))
    runs.sort(key=lambda r: r[0])
    ms, stats = runs[len(runs) // 2]
    alpha, c = stats.acceptance_rate, stats.cost_ratio
    out = {
        "decode_tokens_per_s": n / (ms / 1e3),
        "decode_tokens_per_s_plain": n / (plain_ms / 1e3),
        "spec_speedup": plain_ms / ms,
        "spec_acceptance_rate": alpha,
        "spec_mean_accepted_length": stats.mean_accepted_length,
        "spec_cost_ratio": c,
        "spec_speedup_analytical": analytical_speedup(alpha, gamma, c),
        "greedy_match": float(torch.equal(tokens, reference)),
    }
    if isinstance(setting.get("draft"), torch.nn.Module):
        out["assistant_stored_bytes"] = float(stored_bytes(setting["draft"]))
    return out


def mean_pool_embed(model: torch.nn.Module, tokenizer: Any, sentences: list[str], batch_size: int) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers computes them (mean over the attention
    mask, L2-normalised): the encoder workloads' own function, one implementation."""
    from optimizers.workloads.minilm import embed

    with torch.inference_mode():
        return embed(model, tokenizer, sentences, batch_size)


def _encoder(wl: Workload, reference: Measurement | None, s: SpeedSettings, speed: bool):
    ev: EncoderEval = wl.eval  # type: ignore[assignment]
    emb = mean_pool_embed(wl.model, wl.tokenizer, ev.sentences, ev.batch_size)
    out: dict[str, float] = {}
    if ev.pairs:
        a = mean_pool_embed(wl.model, wl.tokenizer, [p[0] for p in ev.pairs], ev.batch_size)
        b = mean_pool_embed(wl.model, wl.tokenizer, [p[1] for p in ev.pairs], ev.batch_size)
        gold = torch.tensor([p[2] for p in ev.pairs])
        out["pair_spearman"] = M.spearman((a * b).sum(-1), gold)
    if reference is not None and reference.outputs is not None:
        ref = reference.outputs
        out["embedding_cosine"] = M.mean_cosine(ref, emb)
        iu = torch.triu_indices(len(emb), len(emb), 1)
        out["similarity_spearman"] = M.spearman((ref @ ref.T)[iu[0], iu[1]], (emb @ emb.T)[iu[0], iu[1]])
        out["output_rel_error"] = M.rel_error(ref, emb)
    batch = ev.sentences[: ev.batch_size]
    enc = wl.tokenizer(batch, padding=True, truncation=True, return_tensors="pt").to(wl.device)

    def forward() -> Any:
        with torch.inference_mode():
            return wl.model(**enc).last_hidden_state

    timers = {}
    if speed:
        ms, spread = median_and_spread(time_call(forward, s, wl.device))
        out |= {"latency_ms": ms, "latency_spread_ms": spread}
        timers["latency_ms"] = sampler(forward, ms, _sync(wl.device))
    return out, emb, forward, timers


def _sync(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _vision(wl: Workload, reference: Measurement | None, s: SpeedSettings, speed: bool):
    ev: VisionEval = wl.eval  # type: ignore[assignment]
    with torch.inference_mode():
        logits = torch.cat([wl.model(x.to(wl.device)).float().cpu() for x in ev.images.split(ev.batch_size)])
    out = {"accuracy": float((logits.argmax(-1) == ev.labels).double().mean())}
    if reference is not None and reference.outputs is not None:
        out |= _fidelity(reference.outputs, logits)
    batch = ev.images[: ev.batch_size].to(wl.device)

    def forward() -> Any:
        with torch.inference_mode():
            return wl.model(batch)

    timers = {}
    if speed:
        ms, spread = median_and_spread(time_call(forward, s, wl.device))
        out |= {"latency_ms": ms, "latency_spread_ms": spread}
        timers["latency_ms"] = sampler(forward, ms, _sync(wl.device))
    return out, logits, forward, timers


def quality(wl: Workload) -> dict[str, float]:
    """The task's quality figures alone (perplexity, accuracy, pair Spearman), no speed and no
    reference: what a training step or a comparison model is judged by, as the scenario judges."""
    from dataclasses import replace

    with torch.no_grad():
        was = wl.model.training
        wl.model.eval()
        try:
            if wl.task == "causal_lm":  # greedy answers: the inference scenario's, not a training figure
                return _lm_quality(replace(wl, eval=replace(wl.eval, answers=[])), None)[0]
            if wl.task == "vision":
                return _vision(wl, None, SpeedSettings.from_env(), speed=False)[0]
            return _encoder(wl, None, SpeedSettings.from_env(), speed=False)[0]
        finally:
            wl.model.train(was)


def parameter_count(model: torch.nn.Module) -> int:
    """Elements of the model's parameters (shared ones once); the workload records it at load,
    before any transform packs or removes them, so every step divides by the same count."""
    seen: set[int] = set()
    n = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def sixteen_bit_reference(stored: float, params: int) -> dict[str, float]:
    """Stored bits per parameter, and stored bytes against a 16-bit copy (2 bytes a parameter)."""
    if params <= 0:
        return {}
    return {"bits_per_param": 8.0 * stored / params, "stored_bytes_vs_16bit": stored / (2.0 * params)}


# ---------------------------------------------------------------- entry point

def measure(
    workload: Workload,
    reference: Measurement | None = None,
    *,
    speed: bool = True,
    memory: bool = True,
    settings: SpeedSettings | None = None,
    runtime: dict[str, Any] | None = None,
) -> Measurement:
    """Measure ``workload`` with the common protocol; fidelity metrics need ``reference``
    (the baseline's Measurement). ``runtime`` holds the settings the inference scenario applies
    (``speculative``: a draft-and-verify setting; ``kv_cache``: a quantized or sink KV cache),
    accumulated by the pipeline from the steps so far. Metric names follow ``optimizers.metrics``."""
    wl = workload
    runtime = runtime or {}
    settings = settings or SpeedSettings.from_env()
    wl.model.eval()
    values: dict[str, float] = {"stored_bytes": float(stored_bytes(wl.model))}
    values |= sixteen_bit_reference(values["stored_bytes"], wl.meta.get("param_count") or parameter_count(wl.model))
    if wl.task == "causal_lm":
        q, outputs = _lm_quality(wl, reference)
        values |= q
        values |= lm_kv_cache(wl, runtime.get("kv_cache"))
        if runtime.get("kv_cache"):  # KL / top-1 / answers are not computed through the cache: not reported
            values = {k: v for k, v in values.items() if k not in NOT_THROUGH_CACHE}
        forward, timers = None, {}
        if speed:
            sp, forward, timers = _lm_speed(wl, settings, runtime)
            values |= sp
        if memory:
            ev: LMEval = wl.eval  # type: ignore[assignment]
            ids = _lm_windows(ev)[:1].to(wl.device)
            forward = lambda: wl.model(input_ids=ids, use_cache=False)  # noqa: E731
    elif wl.task == "encoder":
        q, outputs, forward, timers = _encoder(wl, reference, settings, speed)
        values |= q
    elif wl.task == "vision":
        q, outputs, forward, timers = _vision(wl, reference, settings, speed)
        values |= q
    else:
        raise ValueError(f"unknown task {wl.task!r}; expected causal_lm, encoder or vision")
    if speed and reference is not None and reference.timers:
        values |= interleaved_figures(reference, timers, settings)
    if memory and forward is not None:
        with torch.inference_mode():
            values["peak_memory_bytes"] = float(peak_memory_bytes(wl.model, forward, wl.device))
    return Measurement(metrics=values, outputs=outputs, environment=environment(wl.device), timers=timers)


def pin_threads() -> int:
    """Fix torch's intra-op thread count for a whole run, so the baseline and every step time on the
    same threads: ``SPEEDBOOK_THREADS``, else the cores this process may run on. Returns it."""
    raw = os.environ.get("SPEEDBOOK_THREADS", "").strip()
    if raw and not (raw.isdigit() and int(raw) > 0):
        raise ValueError(f"SPEEDBOOK_THREADS={raw!r} must be a positive integer (or unset: every core the worker may use)")
    n = int(raw) if raw else len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def threads_note() -> str:
    return f"{torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
