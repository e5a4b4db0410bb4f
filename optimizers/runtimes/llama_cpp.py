"""llama.cpp as the peer a CPU user would pick instead (Gerganov et al., github.com/ggml-org/llama.cpp),
through ``llama-cpp-python`` — an optional extra (``pip install '.[bench]'``; it compiles llama.cpp
from source: 20 min on 2 shared cores here), never a runtime requirement.

A workload whose weights come from a GGUF file (``meta["gguf"]``: smollm2-135m) gets llama.cpp
peers on its quantization steps: the shipped file itself (Q4_1) and, where llama.cpp's own
quantizer can make them, Q4_K_M and Q8_0 of the same weights (re-quantized from the Q4_1
source, cached beside the converted model under the data directory). Each is measured like a
step: perplexity on the same held-out windows from llama.cpp's logits, fidelity against the
baseline's logits, the greedy answers, prefill of the same prompt and the greedy decode of the
same number of tokens, with the same thread count as PyTorch; its stored bytes are the GGUF
file's size (metadata and tokenizer included)."""
from __future__ import annotations

import importlib.util
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
INSTALL = "pip install 'llama-cpp-python==0.3.36' (or `pip install '.[bench]'`; it compiles llama.cpp, minutes)"
# which llama.cpp formats sit beside which of our formats
FORMATS = {"int4": ("Q4_1", "Q4_K_M"), "int8": ("Q8_0",)}
_FTYPES = {"Q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1", "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}


def missing() -> str | None:
    """Why the peer cannot run here, or None."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama.cpp peer skipped: llama-cpp-python is not installed ({INSTALL})"
    return None


def source_format(gguf: Path) -> str:
    """The file type of a GGUF (e.g. "Q4_1"), read from its metadata."""
    from gguf import GGUFReader
    from gguf.constants import LlamaFileType

    field = GGUFReader(str(gguf)).fields.get("general.file_type")
    if field is None:
        return "unknown"
    return LlamaFileType(int(field.parts[field.data[0]][0])).name.removeprefix("MOSTLY_")


def quantized(src: Path, fmt: str, out_dir: Path) -> Path:
    """``src`` re-quantized by llama.cpp's own quantizer to ``fmt``, cached in ``out_dir`` (written
    to a temporary name and renamed, so a crash leaves no half file)."""
    if fmt not in _FTYPES:
        raise ValueError(f"format {fmt!r} is not offered; choose one of {sorted(_FTYPES)}")
    import llama_cpp

    out = out_dir / f"{src.stem.split('.')[0]}.{fmt}.gguf"
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, _FTYPES[fmt])
    params.allow_requantize = True  # the source is already quantized (Q4_1): dequantized, then re-quantized
    params.nthread = torch.get_num_threads()
    log.info("llama.cpp: quantizing %s to %s", src.name, fmt)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama.cpp could not quantize {src.name} to {fmt} (return code {rc})")
    tmp.rename(out)
    return out


@dataclass
class LlamaCppPeer:
    """One GGUF file run by llama.cpp; ``metrics`` measures it against the run's baseline."""

    gguf: Path
    fmt: str

    @property
    def label(self) -> str:
        return f"llama.cpp:{self.fmt}"

    def _open(self, n_ctx: int, logits_all: bool):
        from llama_cpp import Llama

        threads = torch.get_num_threads()
        return Llama(model_path=str(self.gguf), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads,
                     n_threads_batch=threads, logits_all=logits_all, seed=0, verbose=False)

    def metrics(self, workload, reference, settings) -> dict[str, float]:
        """The step's protocol on llama.cpp (``workload``: the step's, for its evaluation data and
        tokenizer; ``reference``: the baseline Measurement; ``settings``: SpeedSettings)."""
        from optimizers import metrics as M
        from optimizers.measure import _lm_windows, _fidelity, answer_matches, decode_bandwidth, parameter_count
        from optimizers.measure import sixteen_bit_reference

        ev = workload.eval
        windows = _lm_windows(ev)
        need = ev.prompt_len * ev.batch_size
        if ev.batch_size != 1:
            raise ValueError("the llama.cpp peer measures batch 1, the shape llama.cpp's CLI serves")
        prompt = ev.token_ids[:need].tolist()
        out: dict[str, float] = {}

        llm = self._open(max(ev.window, need + ev.decode_tokens, 64), logits_all=True)
        try:
            nll, count, all_logits = 0.0, 0, []
            for w in windows:
                llm.reset()
                llm.eval(w.tolist())
                logits = torch.from_numpy(llm.scores[: len(w)].copy())  # (T, V) float32
                lp = torch.log_softmax(logits[:-1].double(), dim=-1)
                nll -= float(lp.gather(-1, w[1:, None]).sum())
                count += len(w) - 1
                all_logits.append(logits)
            out["perplexity"] = M.perplexity_from_nll(nll, count)
            if reference is not None and reference.outputs is not None:
                out |= _fidelity(reference.outputs, torch.stack(all_logits))
            del all_logits
        finally:
            llm.close()

        llm = self._open(max(need + ev.decode_tokens, max((len(ids[0]) for ids, _ in ev.answers), default=0)
                             + ev.answer_tokens, 64), logits_all=False)
        try:
            if ev.answers:
                eos = llm.token_eos()
                right = 0
                for ids, accepted in ev.answers:
                    toks = _greedy(llm, ids[0].tolist(), ev.answer_tokens, stop=eos)[0]
                    text = workload.tokenizer.decode(toks, skip_special_tokens=True)
                    right += answer_matches(text, accepted)
                out["answer_accuracy"] = right / len(ev.answers)
            pre = []
            for _ in range(settings.warmup + settings.repeats):
                llm.reset()
                t0 = time.perf_counter()
                llm.eval(prompt)
                pre.append((time.perf_counter() - t0) * 1e3)
            pre_ms = statistics.median(pre[settings.warmup:])
            _greedy(llm, prompt, ev.decode_tokens)  # warm-up
            dec = [_greedy(llm, prompt, ev.decode_tokens)[1] for _ in range(max(3, settings.repeats // 2))]
            while sum(dec) < settings.min_time_s * 1e3 and len(dec) < 50:
                dec.append(_greedy(llm, prompt, ev.decode_tokens)[1])
        finally:
            llm.close()
        stored = float(self.gguf.stat().st_size)
        out |= {"latency_ms": pre_ms, "prefill_tokens_per_s": need / (pre_ms / 1e3),
                "decode_tokens_per_s": ev.decode_tokens / (statistics.median(dec) / 1e3), "stored_bytes": stored,
                "threads": float(torch.get_num_threads())}
        out |= sixteen_bit_reference(stored, workload.meta.get("param_count") or parameter_count(workload.model))
        out |= decode_bandwidth(stored, out["decode_tokens_per_s"], "cpu")
        return out


def _greedy(llm, prompt: list[int], n: int, stop: int | None = None) -> tuple[list[int], float]:
    """Prefill ``prompt`` (untimed), then ``n`` greedy steps of one token: (tokens, ms of the steps),
    the loop ``measure.greedy_decode`` runs on PyTorch."""
    llm.reset()
    llm.eval(prompt)
    tok = _argmax_last(llm)
    toks: list[int] = []
    t0 = time.perf_counter()
    for _ in range(n):
        toks.append(tok)
        if stop is not None and tok == stop:
            break
        llm.eval([tok])
        tok = _argmax_last(llm)
    return toks, (time.perf_counter() - t0) * 1e3


def _argmax_last(llm) -> int:
    """The greedy next token from the context's logits of the last evaluated position. Read from
    llama.cpp itself: ``Llama.scores`` is filled only with ``logits_all=True`` (without it, it
    holds stale rows: a loop reading it decodes garbage at full speed)."""
    import llama_cpp
    import numpy as np

    row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
    return int(row.argmax())


def peers_for(workload, kind: str, notes: list[str]) -> dict[str, Any]:
    """The llama.cpp peers of a ``kind`` ("int4" | "int8") step on a workload with a GGUF source;
    {} (and a note saying why) when the extra is absent or a format cannot be made."""
    gguf = workload.meta.get("gguf")
    if not gguf or kind not in FORMATS:
        return {}
    if (why := missing()) is not None:
        notes.append(why)
        return {}
    src = Path(gguf)
    # beside the workload's converted model (<data>/models/llama.cpp for smollm2-135m)
    cache = Path(workload.meta.get("source") or src.parent).parent / "llama.cpp"
    have = source_format(src)
    out: dict[str, Any] = {}
    for fmt in FORMATS[kind]:
        try:
            path = src if fmt == have else quantized(src, fmt, cache)
        except RuntimeError as err:
            notes.append(str(err))
            continue
        peer = LlamaCppPeer(path, fmt)
        out[peer.label] = peer
    return out
