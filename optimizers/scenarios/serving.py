"""The serving scenario: a seeded request trace served by one engine, measured the way serving
benchmarks do (vLLM's ``benchmark_serving``): output tokens/s and requests/s over the makespan,
TTFT / TPOT / end-to-end percentiles from each request's arrival, KV-cache bytes reserved vs
holding tokens, and whether every output equals the baseline's greedy output.

Engines, chosen by the runtime settings the steps accumulate (``batching``):
- ``sequential`` (the baseline): one request at a time through the lean greedy loop over a
  static KV cache (``optimizers.measure.greedy_decode``), the loop every inference figure uses;
- ``static``: padded batches of ``max_concurrency`` through ``generate()`` (left padding, each
  batch runs until its longest request is done: the honest middle baseline);
- ``continuous``: transformers' continuous-batching scheduler over its paged KV cache
  (``ContinuousBatchingManager``), with page size, block count, max batch tokens (chunked
  prefill) and prefix sharing from the settings.

A ``speculative`` setting (draft-and-verify, ``optimizers.decoding.speculative``) changes how the
sequential and static engines decode: one request at a time through the lean draft-and-verify
loop, or static batches verified in one target forward per round (batched verification). The
continuous scheduler decodes one token per request per step and has no verify path: it serves
without the draft, and says so.

Every engine admits at most ``max_concurrency`` requests at once (a server-side queue); latency
is counted from the request's arrival in the trace, so queueing is part of it. Requests stop at
their stated output length, never at EOS (like ``--ignore-eos`` in vLLM's benchmark), so every
engine generates the same tokens and outputs compare one to one."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from optimizers.decoding.speculative import SpecStats, left_pad, speculative_greedy, speculative_greedy_batched
from optimizers.scenarios.trace import Request, TraceConfig, make_trace  # noqa: F401  (the trace this serves)


# ---------------------------------------------------------------- results and their figures

@dataclass
class Served:
    """One request as an engine served it: its tokens and when each became available."""

    tokens: list[int]
    arrival: float  # absolute perf_counter time the request arrived
    stamps: list[float]  # absolute time each output token was available


@dataclass
class ServingResult:
    served: list[Served]
    makespan_s: float
    kv_reserved_bytes: float  # at the peak: KV bytes allocated to live requests (pages, padded rows, a static cache)
    kv_used_bytes: float  # at that moment: bytes of those holding tokens
    kv_pool_bytes: float = 0.0  # what the engine allocated for KV up front (the paged pool); 0 when it grows
    notes: list[str] = field(default_factory=list)
    spec: list[SpecStats] = field(default_factory=list)  # per request, in trace order, when a draft speculated


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation between order statistics (numpy's
    default), so p50 of an even count is the mean of the middle two."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def figures(result: ServingResult, reference: list[list[int]] | None) -> dict[str, float]:
    """The serving metrics of one run of the trace (all measured; ratios are the caller's)."""
    ttft = [(s.stamps[0] - s.arrival) * 1e3 for s in result.served]
    tpot = [(s.stamps[-1] - s.stamps[0]) * 1e3 / (len(s.stamps) - 1) for s in result.served if len(s.stamps) > 1]
    e2e = [(s.stamps[-1] - s.arrival) * 1e3 for s in result.served]
    n_out = sum(len(s.tokens) for s in result.served)
    out = {
        "throughput_tokens_per_s": n_out / result.makespan_s,
        "requests_per_s": len(result.served) / result.makespan_s,
        "ttft_ms_p50": percentile(ttft, 50), "ttft_ms_p95": percentile(ttft, 95),
        "e2e_ms_p50": percentile(e2e, 50), "e2e_ms_p95": percentile(e2e, 95),
        "kv_cache_bytes_reserved": result.kv_reserved_bytes, "kv_cache_bytes_used": result.kv_used_bytes,
        "kv_cache_used_fraction": result.kv_used_bytes / result.kv_reserved_bytes if result.kv_reserved_bytes else 0.0,
        "serving_makespan_s": result.makespan_s,
    }
    if tpot:
        out |= {"tpot_ms_p50": percentile(tpot, 50), "tpot_ms_p95": percentile(tpot, 95)}
    if result.kv_pool_bytes:
        out["kv_cache_pool_bytes"] = result.kv_pool_bytes
    if result.spec:
        out |= acceptance(result.spec)
    if reference is not None:
        out |= exactness([s.tokens for s in result.served], reference)
    return out


def exactness(outputs: list[list[int]], reference: list[list[int]]) -> dict[str, float]:
    """Fraction of requests whose tokens equal the reference's exactly, and the mean fraction of
    each request's tokens that agree before the first difference."""
    if len(outputs) != len(reference):
        raise ValueError(f"{len(outputs)} outputs for {len(reference)} reference requests")
    exact, prefix = 0, 0.0
    for out, ref in zip(outputs, reference):
        exact += out == ref
        agree = next((i for i, (a, b) in enumerate(zip(out, ref)) if a != b), min(len(out), len(ref)))
        prefix += agree / max(len(ref), 1)
    return {"output_exact_fraction": exact / len(reference), "output_prefix_agreement": prefix / len(reference)}


def acceptance(stats: list[SpecStats]) -> dict[str, float]:
    """α and the mean accepted length over every request's rounds (pooled counts, as one long
    decode would report them: accepted ÷ proposed, emitted ÷ rounds)."""
    pooled = SpecStats(proposed=sum(s.proposed for s in stats), accepted=sum(s.accepted for s in stats),
                       rounds=sum(s.rounds for s in stats))
    return {"spec_acceptance_rate": pooled.acceptance_rate, "spec_mean_accepted_length": pooled.mean_accepted_length}


def kv_bytes_per_token(model: torch.nn.Module) -> int:
    """K and V of one token across all layers, in the model's dtype (computed from its config)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * _dtype(model).itemsize


def _dtype(model: torch.nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


# ---------------------------------------------------------------- engines

class _Admission:
    """The server-side queue: request i is admitted at its arrival or when a slot frees,
    whichever is later; ``due()`` lists the requests to start now."""

    def __init__(self, trace: list[Request], limit: int, t0: float) -> None:
        self.pending = sorted(trace, key=lambda r: (r.arrival_s, r.index))
        self.limit, self.t0, self.inflight = limit, t0, 0

    def due(self, now: float) -> list[Request]:
        out = []
        while self.pending and self.inflight < self.limit and self.t0 + self.pending[0].arrival_s <= now:
            out.append(self.pending.pop(0))
            self.inflight += 1
        return out

    def next_arrival(self) -> float | None:
        return self.t0 + self.pending[0].arrival_s if self.pending else None


def _wait_until(t: float) -> None:
    dt = t - time.perf_counter()
    if dt > 0:
        time.sleep(dt)


def _static_batches(trace: list[Request], limit: int, t0: float) -> Iterator[list[Request]]:
    """Batches of up to ``limit`` requests in arrival order, each yielded once its last member has
    arrived (and, the caller serving them in turn, the previous batch is done)."""
    order = sorted(trace, key=lambda r: (r.arrival_s, r.index))
    for b in range(0, len(order), limit):
        batch = order[b : b + limit]
        _wait_until(t0 + max(r.arrival_s for r in batch))
        yield batch


@torch.inference_mode()
def serve_sequential(model: torch.nn.Module, trace: list[Request], sync: Callable[[], None],
                     speculative: dict[str, Any] | None = None) -> ServingResult:
    """The baseline: one request at a time through the lean greedy loop (static KV cache); with a
    ``speculative`` setting, through the lean draft-and-verify loop instead (same tokens)."""
    from optimizers.measure import greedy_decode

    stats: dict[int, SpecStats] = {}

    def decode(prompt: torch.Tensor, n: int, stamps: list[float], index: int) -> torch.Tensor:
        if speculative is None:
            return greedy_decode(model, prompt, n, sync=sync, stamps=stamps)[0]
        from optimizers.techniques.speculative_decoding import draft_source

        draft = draft_source(model, speculative)
        tokens, stats[index], _ = speculative_greedy(model, prompt, n, draft, speculative["gamma"], sync, stamps)
        return tokens

    served: dict[int, Served] = {}
    bpt = kv_bytes_per_token(model)
    reserved = 0
    t0 = time.perf_counter()
    for req in sorted(trace, key=lambda r: (r.arrival_s, r.index)):
        _wait_until(t0 + req.arrival_s)
        stamps: list[float] = []
        tokens = decode(torch.tensor([req.prompt]), req.output_tokens, stamps, req.index)
        served[req.index] = Served(tokens[0].tolist(), t0 + req.arrival_s, stamps)
        reserved = max(reserved, (len(req.prompt) + req.output_tokens) * bpt)  # the static cache is sized exactly
    makespan = time.perf_counter() - t0
    how = ("the lean greedy loop over a static KV cache sized to prompt + output, so every reserved byte holds a "
           "token" if speculative is None else
           f"the lean draft-and-verify loop ({speculative['source']} draft, γ = {speculative['gamma']}); KV counted "
           "as the target's tokens (rejected guesses are cropped)")
    return ServingResult([served[i] for i in range(len(trace))], makespan, reserved, reserved,
                         notes=[f"one request at a time through {how}; the queue is the cost"],
                         spec=[stats[i] for i in range(len(trace))] if speculative is not None else [])


class _StepClock:
    """A generate() streamer that stamps each decoding step (the first put is the prompt)."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync, self.stamps, self._prompt_seen = sync, [], False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.sync()
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass


@torch.inference_mode()
def serve_static(model: torch.nn.Module, trace: list[Request], limit: int, pad_id: int,
                 sync: Callable[[], None]) -> ServingResult:
    """Padded batches of up to ``limit`` requests in arrival order through ``generate()``: a
    batch starts when its last member has arrived and the previous batch is done, and runs until
    its longest output is complete (finished rows keep decoding as padding)."""
    bpt = kv_bytes_per_token(model)
    served: dict[int, Served] = {}
    peak_reserved = peak_used = 0
    t0 = time.perf_counter()
    for batch in _static_batches(trace, limit, t0):
        ids, mask = left_pad([r.prompt for r in batch], pad_id)  # every row's last prompt token in the last column
        width = ids.shape[1]
        n = max(r.output_tokens for r in batch)
        clock = _StepClock(sync)
        out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                             pad_token_id=pad_id, eos_token_id=None, streamer=clock)
        for row, r in enumerate(batch):
            served[r.index] = Served(out[row, width : width + r.output_tokens].tolist(), t0 + r.arrival_s,
                                     clock.stamps[: r.output_tokens])
        reserved = len(batch) * (width + n) * bpt  # the padded rectangle the cache holds at the batch's end
        if reserved > peak_reserved:
            peak_reserved = reserved
            peak_used = sum(len(r.prompt) + r.output_tokens for r in batch) * bpt
    makespan = time.perf_counter() - t0
    return ServingResult([served[i] for i in range(len(trace))], makespan, peak_reserved, peak_used,
                         notes=[f"static batches of {limit}: each runs to its longest output, and the KV cache holds "
                                "the padded rectangle (computed from the batch's shapes)"])


@torch.inference_mode()
def serve_static_speculative(model: torch.nn.Module, trace: list[Request], limit: int, pad_id: int,
                             sync: Callable[[], None], speculative: dict[str, Any]) -> ServingResult:
    """Static batches as ``serve_static`` (up to ``limit`` requests in arrival order, a batch starts
    when its last member has arrived and the previous one is done), each decoded by batched
    draft-and-verify: drafts propose per request, the target verifies the whole batch in one
    forward per round. A finished row stops advancing (its new slots masked) until the batch is done."""
    from optimizers.techniques.speculative_decoding import draft_source

    served: dict[int, Served] = {}
    stats: dict[int, SpecStats] = {}
    peak_reserved = peak_used = 0.0
    t0 = time.perf_counter()
    for batch in _static_batches(trace, limit, t0):
        stamps: list[list[float]] = [[] for _ in batch]
        drafts = [draft_source(model, speculative) for _ in batch]  # one per row: model and self drafts hold a cache
        out = speculative_greedy_batched(model, [r.prompt for r in batch], [r.output_tokens for r in batch], drafts,
                                         speculative["gamma"], pad_id, sync, stamps)
        for r, tokens, st, row_stamps in zip(batch, out.tokens, out.stats, stamps):
            served[r.index] = Served(tokens, t0 + r.arrival_s, row_stamps)
            stats[r.index] = st
        if out.kv_bytes > peak_reserved:  # the batch's cache at its end: its largest
            peak_reserved, peak_used = float(out.kv_bytes), out.kv_bytes * out.kv_used_fraction
    makespan = time.perf_counter() - t0
    order_ids = range(len(trace))
    return ServingResult([served[i] for i in order_ids], makespan, peak_reserved, peak_used,
                         spec=[stats[i] for i in order_ids],
                         notes=[f"static batches of {limit} with batched verification ({speculative['source']} "
                                f"draft, γ = {speculative['gamma']}): drafting per request (a draft instance each), "
                                "one target forward per round over the batch; rejected guesses, pads and finished "
                                "rows' slots stay in the batch's cache, masked, so they count as reserved but unused "
                                "KV (measured from the cache's tensors and mask)"])


@dataclass(frozen=True)
class PagedSettings:
    page_size: int = 16
    num_blocks: int | None = None  # None: sized to the trace (max_concurrency × the longest request, + 10 %)
    max_batch_tokens: int | None = None  # None: the longest prompt + max_concurrency (no prompt is split)
    prefix_sharing: bool = False

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "PagedSettings":
        return cls(page_size=int(settings.get("kv_page_size", cls.page_size)),
                   num_blocks=settings.get("kv_num_blocks"),
                   max_batch_tokens=settings.get("max_batch_tokens"),
                   prefix_sharing=bool(settings.get("prefix_caching", False)))

    def resolved(self, trace: list[Request], limit: int) -> tuple[int, int]:
        longest = max(len(r.prompt) + r.output_tokens for r in trace)
        blocks = self.num_blocks or math.ceil(1.1 * min(limit, len(trace)) * math.ceil(longest / self.page_size)) + 2
        batch_tokens = self.max_batch_tokens or max(len(r.prompt) for r in trace) + limit
        return blocks, batch_tokens


class _KVSampler:
    """Reads the paged cache's block tables between scheduler steps: the blocks live requests hold
    (shared blocks once) and how many of their slots hold tokens; keeps the sample with the most
    reserved. Measured from the allocator's own bookkeeping, not from the trace."""

    def __init__(self) -> None:
        self.reserved = self.used = 0.0

    def sample(self, manager: Any) -> None:
        bp = getattr(manager, "batch_processor", None)
        if bp is None:
            return
        try:
            states = list(bp.scheduler.active_requests.values())
            reserved = used = 0.0
            for alloc in bp.cache.cache_allocators.values():
                fill: dict[int, int] = {}
                tpb = alloc.tokens_per_page
                for st in states:
                    blocks = list(alloc.block_table.get(st.request_id, ()))
                    n = st.position_offset
                    for j, blk in enumerate(blocks):
                        fill[blk] = max(fill.get(blk, 0), min(tpb, max(n - j * tpb, 0)))
                reserved += len(fill) * alloc.bytes_per_block
                used += sum(fill.values()) / tpb * alloc.bytes_per_block
        except (RuntimeError, KeyError, AttributeError):  # a table changed while read: the next sample counts
            return
        if reserved > self.reserved:
            self.reserved, self.used = reserved, used


@torch.inference_mode()
def serve_continuous(model: torch.nn.Module, trace: list[Request], limit: int, paged: PagedSettings,
                     warmup_prompt: list[int]) -> ServingResult:
    """transformers' continuous batching over its paged KV cache: requests join the running batch
    at the next step after they are admitted and leave when done."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    blocks, batch_tokens = paged.resolved(trace, limit)
    cb = ContinuousBatchingConfig(page_size=paged.page_size, num_blocks=blocks, max_batch_tokens=batch_tokens,
                                  allow_block_sharing=paged.prefix_sharing, max_requests_per_batch=limit,
                                  use_cuda_graph=False, use_async_batching=False)
    gen = GenerationConfig(do_sample=False, eos_token_id=-1, pad_token_id=0,
                           max_new_tokens=max(r.output_tokens for r in trace))
    served: dict[int, Served] = {}
    sampler = _KVSampler()
    with model.continuous_batching_context_manager(generation_config=gen, continuous_batching_config=cb,
                                                   warmup=False) as manager:
        manager.add_request(warmup_prompt, request_id="warmup", max_new_tokens=2)  # first-call costs, untimed
        while manager.get_result(request_id="warmup", timeout=60) is None:
            pass
        pool = float(sum(a.cache_tensor.numel() * a.cache_tensor.element_size()
                         for a in manager.batch_processor.cache.cache_allocators.values()) /
                     max(len(manager.batch_processor.cache.cache_allocators), 1))
        t0 = time.perf_counter()
        admit = _Admission(trace, limit, t0)
        by_id: dict[str, Request] = {}
        while len(served) < len(trace):
            for req in admit.due(time.perf_counter()):
                rid = f"r{req.index}"
                by_id[rid] = req
                manager.add_request(req.prompt, request_id=rid, max_new_tokens=req.output_tokens,
                                    record_timestamps=True)
            result = manager.get_result(timeout=0.002)
            sampler.sample(manager)
            if result is None:
                if not manager.is_running():
                    raise RuntimeError("the continuous-batching loop stopped before serving every request")
                continue
            if result.error:
                raise RuntimeError(f"continuous batching failed request {result.request_id}: {result.error}")
            req = by_id[result.request_id]
            served[req.index] = Served(list(result.generated_tokens), t0 + req.arrival_s, list(result.timestamps or []))
            admit.inflight -= 1
        makespan = time.perf_counter() - t0
    return ServingResult([served[i] for i in range(len(trace))], makespan, sampler.reserved, sampler.used,
                         kv_pool_bytes=pool,
                         notes=[f"continuous batching: page {paged.page_size} tokens, {blocks} blocks, "
                                f"max {batch_tokens} tokens per step, prefix sharing "
                                f"{'on' if paged.prefix_sharing else 'off'}; KV reserved/used read from the "
                                "allocator's block tables between steps (peak reserved)"])


ENGINES = ("sequential", "static", "continuous")


def serve(workload: Any, trace: list[Request], cfg: TraceConfig, settings: dict[str, Any]) -> ServingResult:
    """Serve ``trace`` with the engine the settings name (``batching``; default sequential), decoding
    by draft-and-verify where a ``speculative`` setting is on (sequential: one request at a time;
    static: batched verification)."""
    engine = settings.get("batching", "sequential")
    model = workload.model.eval()
    sync = torch.cuda.synchronize if workload.device.startswith("cuda") else (lambda: None)
    spec = settings.get("speculative")
    if engine == "sequential":
        serve_sequential(model, trace[:1], sync, spec)  # warm-up: first-call costs, untimed
        return serve_sequential(model, trace, sync, spec)
    if engine == "static":
        pad = workload.tokenizer.pad_token_id if workload.tokenizer is not None else None
        pad = pad if pad is not None else 0
        if spec:
            serve_static_speculative(model, trace[:1], 1, pad, sync, spec)
            return serve_static_speculative(model, trace, cfg.max_concurrency, pad, sync, spec)
        serve_static(model, trace[:1], 1, pad, sync)
        return serve_static(model, trace, cfg.max_concurrency, pad, sync)
    if engine == "continuous":
        warm = list(range(3, 19))  # a synthetic prompt: it can seed no prefix of the trace
        result = serve_continuous(model, trace, cfg.max_concurrency, PagedSettings.from_settings(settings), warm)
        if spec:
            result.notes.append("the speculative setting is not applied here: transformers' continuous batching "
                                "decodes one token per request per step (no verify path); speculative_decoding after "
                                "this step serves static batches with batched verification")
        return result
    raise ValueError(f"batching={engine!r} is not a serving engine; choose one of {', '.join(ENGINES)}")


def measure_serving(workload: Any, reference: Any = None, *, runtime: dict[str, Any] | None = None,
                    trace: TraceConfig | None = None) -> Any:
    """The serving scenario's measurement: the inference harness's quality figures (perplexity
    and fidelity on the same held-out windows, so quality gates mean the same) and stored bytes,
    then the trace served by the settings' engine. The baseline's tokens are the reference every
    later step's outputs must equal."""
    from optimizers import measure as H

    if workload.task != "causal_lm":
        raise ValueError(f"the serving scenario serves causal LMs, not {workload.task}")
    cfg = trace or TraceConfig()
    runtime = runtime or {}
    wl = workload
    wl.model.eval()
    values: dict[str, float] = {"stored_bytes": float(H.stored_bytes(wl.model))}
    values |= H.sixteen_bit_reference(values["stored_bytes"], wl.meta.get("param_count") or H.parameter_count(wl.model))
    quality, logits = H._lm_quality(wl, reference)
    values |= quality
    requests = make_trace(wl.eval.token_ids, cfg)
    result = serve(wl, requests, cfg, runtime)
    ref_tokens = reference.served if reference is not None and reference.served is not None else None
    tokens = [s.tokens for s in result.served]
    values |= figures(result, ref_tokens if ref_tokens is not None else tokens)
    values["trace_requests"] = float(len(requests))
    values["trace_max_concurrency"] = float(cfg.max_concurrency)
    return H.Measurement(metrics=values, outputs=logits, served=tokens, environment=H.environment(wl.device),
                         notes=result.notes)
