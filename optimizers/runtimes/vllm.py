"""vLLM as the serving scenario's peer on GPU workers: the run's exported compressed-tensors
checkpoint served by vLLM's offline engine (``vllm.LLM``: PagedAttention, continuous batching,
CUDA graphs, prefix caching) on the same seeded trace as Speedbook's own engines, side by side
in the same run, its outputs compared token for token with the baseline's greedy ones. vLLM is
an optional extra of the GPU image (it brings its own torch build, so never a CPU requirement):
without it, or without a GPU, the step's note says how to enable it. The path for users who
outgrow one machine: vLLM's tensor parallelism across GPUs, Celery workers across machines."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

ENABLE = ("build the image with vLLM (INSTALL_VLLM=1 docker compose build) or "
          "pip install 'speedbook[vllm]' in a CUDA environment; it installs its own torch build")


def missing(device: str) -> str | None:
    """Why vLLM cannot serve here, with how to enable it; None when it can."""
    if not device.startswith("cuda"):
        return f"vLLM serves on CUDA GPUs and this worker runs on {device}: run on a GPU worker where you {ENABLE}"
    if importlib.util.find_spec("vllm") is None:
        return f"vLLM is not installed on this GPU worker: {ENABLE}"
    return None


def _percentile_figures(name: str, values: list[float]) -> dict[str, float]:
    from optimizers.scenarios.serving import percentile

    return {f"{name}_p50": percentile(values, 50), f"{name}_p95": percentile(values, 95)} if values else {}


class VllmPeer:
    """Serves a trace from a checkpoint directory through vLLM's offline engine."""

    def __init__(self, checkpoint: str | Path) -> None:
        self.checkpoint = Path(checkpoint)

    def serving_metrics(self, workload: Any, trace: Any, reference: list[list[int]] | None) -> dict[str, float]:
        """The trace's figures through vLLM: throughput over the makespan, TTFT / TPOT percentiles
        from vLLM's own request timestamps where it reports them, and exactness against the
        baseline's tokens. vLLM's offline engine takes the whole trace at once (its scheduler admits
        up to ``max_concurrency``), so Poisson arrivals are not replayed."""
        from vllm import LLM, SamplingParams

        from optimizers.scenarios.serving import exactness
        from optimizers.scenarios.trace import TraceConfig, make_trace

        cfg = trace or TraceConfig()
        requests = make_trace(workload.eval.token_ids, cfg)
        llm = LLM(model=str(self.checkpoint), skip_tokenizer_init=True, max_num_seqs=cfg.max_concurrency, seed=0,
                  disable_log_stats=False)
        prompts = [{"prompt_token_ids": r.prompt} for r in requests]
        params = [SamplingParams(temperature=0.0, max_tokens=r.output_tokens, min_tokens=r.output_tokens,
                                 ignore_eos=True, detokenize=False) for r in requests]
        llm.generate(prompts[:1], params[:1], use_tqdm=False)  # warm-up: graph capture, first-call costs
        t0 = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        makespan = time.perf_counter() - t0
        tokens = [list(o.outputs[0].token_ids) for o in outputs]
        out = {"throughput_tokens_per_s": sum(len(t) for t in tokens) / makespan,
               "requests_per_s": len(tokens) / makespan, "serving_makespan_s": makespan}
        ttft, tpot = [], []
        for o, t in zip(outputs, tokens):
            m = getattr(o, "metrics", None)
            if m is not None and getattr(m, "first_token_latency", 0) > 0:
                ttft.append(m.first_token_latency * 1e3)
                if len(t) > 1 and m.last_token_ts > m.first_token_ts:
                    tpot.append((m.last_token_ts - m.first_token_ts) * 1e3 / (len(t) - 1))
        out |= _percentile_figures("ttft_ms", ttft) | _percentile_figures("tpot_ms", tpot)
        if reference is not None:
            out |= exactness(tokens, reference)
        return out


def peers_for(checkpoint: Path, device: str, notes: list[str]) -> dict[str, Any]:
    """{"vllm": VllmPeer} when vLLM can serve here, else {} and a note saying how to enable it."""
    why = missing(device)
    if why:
        notes.append(f"vLLM peer not measured: {why}")
        return {}
    return {"vllm": VllmPeer(checkpoint)}
