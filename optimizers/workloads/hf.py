"""Any Hugging Face model id or local directory as a workload: causal LM or encoder, inferred
from its config. Safetensors only (pickle checkpoints can run code when loaded) and
``trust_remote_code`` off unless the caller turns it on. Every refusal is a WorkloadError
that says what is wrong and what to do, never a traceback from deep inside transformers."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from optimizers.workloads.base import EncoderEval, LMEval, Workload, WorkloadError

SHIPPED_MODELS = (Path(__file__).resolve().parent / "assets").resolve()  # the reference workloads' own files
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
EVAL_TOKENS = 65536
CALIB_BATCHES, CALIB_LEN = 32, 256


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on") or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ).strip().lower() in ("1", "true", "yes", "on")


def model_roots() -> list[Path]:
    """Folders local models may be loaded from: ``SPEEDBOOK_MODEL_ROOTS`` (os.pathsep-separated),
    default ``<data dir>/models``; the shipped reference models are always allowed. Anything else
    on the worker's disk is out of reach."""
    raw = os.environ.get("SPEEDBOOK_MODEL_ROOTS", "")
    roots = [p for p in raw.split(os.pathsep) if p.strip()] or [str(Path(os.environ.get("SPEEDBOOK_DATA", "data")) / "models")]
    return [Path(os.path.expanduser(p)).resolve() for p in roots] + shipped_models()


def shipped_models() -> list[Path]:
    """Models that come with Speedbook or its packages: the reference assets, all-MiniLM-L6-v2."""
    from optimizers.workloads.minilm import model_dir

    try:
        return [SHIPPED_MODELS, Path(model_dir()).resolve()]
    except Exception:  # the encoder package is not installed
        return [SHIPPED_MODELS]


def looks_local(name_or_path: str) -> bool:
    return name_or_path.startswith((".", "~", "/")) or name_or_path.count("/") > 1 or Path(name_or_path).exists()


def contained_path(name_or_path: str) -> Path:
    """The resolved directory (symlinks and ``..`` followed) if it lies under a model root. The
    refusal is the same whether or not the path exists, so it reveals nothing about the disk."""
    p = Path(os.path.expanduser(name_or_path)).resolve()
    roots = model_roots()
    if not any(p == r or r in p.parents for r in roots):
        raise WorkloadError(
            f"workload path {name_or_path!r} is outside the allowed model folders; put the model directory under "
            f"{' or '.join(str(r) for r in roots)} (set SPEEDBOOK_MODEL_ROOTS to change them)"
        )
    if not p.is_dir():
        raise WorkloadError(f"no model directory at {name_or_path!r} under the model folders; it should hold "
                            "config.json and *.safetensors")
    return p


def _resolve(name_or_path: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, is_local). A local path must lie under a model root."""
    if looks_local(name_or_path):
        return str(contained_path(name_or_path)), True
    return name_or_path, False


def _check_index(path: Path) -> None:
    """A sharded checkpoint's index may only point at safetensors files inside the directory."""
    import json

    index = path / "model.safetensors.index.json"
    try:
        files = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise WorkloadError("model.safetensors.index.json is not a valid index (it needs a weight_map)") from None
    bad = sorted(f for f in files if not (isinstance(f, str) and f.endswith(".safetensors") and "/" not in f
                                          and "\\" not in f and (path / f).is_file()))
    if bad:
        raise WorkloadError(f"model.safetensors.index.json points at {', '.join(map(str, bad[:3]))}: only *.safetensors "
                            "files in the model directory are loaded (pickles can run code when loaded)")


def _check_local_files(path: str) -> None:
    files = [p.name for p in Path(path).iterdir()]
    if "model.safetensors.index.json" in files:
        _check_index(Path(path))
    if "config.json" not in files:
        raise WorkloadError(f"{path} has no config.json; it is not a Hugging Face model directory")
    if not any(f.endswith(".safetensors") or f == "model.safetensors.index.json" for f in files):
        pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
        what = f"only pickle checkpoints ({', '.join(pickles)})" if pickles else "no weights"
        raise WorkloadError(
            f"{path} has {what}; Speedbook loads safetensors only (pickles can run code when loaded). "
            "Convert it once where you trust it: model.save_pretrained(dir, safe_serialization=True)"
        )


def check_local_model(name_or_path: str) -> Path:
    """A local model directory as a run would load it, checked before anything is queued: under a
    model root, with config.json and safetensors weights (no pickles), its config not asking for
    remote code. Returns the resolved directory; raises WorkloadError saying what to fix."""
    import json

    path = contained_path(name_or_path)
    _check_local_files(str(path))
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        raise WorkloadError(f"{name_or_path}: config.json is not valid JSON") from None
    if isinstance(cfg, dict) and cfg.get("auto_map"):
        raise WorkloadError(f"{name_or_path}: its config maps to custom code (auto_map); Speedbook never runs remote "
                            "code (trust_remote_code stays off): use a model transformers implements")
    return path


def _hub_error(name: str, err: Exception) -> WorkloadError:
    msg = str(err)
    low = msg.lower()
    if "safetensors" in low and ("bin" in low or "not found" in low or "does not appear" in low or "no file" in low):
        return WorkloadError(
            f"{name!r} has no safetensors weights (only pickle checkpoints); Speedbook loads safetensors only. "
            "Pick a revision or mirror that ships model.safetensors"
        )
    if _offline() or "offline" in low or "connect" in low or "resolve" in low or "network" in low:
        return WorkloadError(
            f"cannot load {name!r}: this machine is offline (HF_HUB_OFFLINE) or cannot reach the Hugging Face Hub, "
            "and the model is not in the local cache. Use a built-in workload (ref-lm, minilm, digits-cnn) or a "
            "local directory with config.json and *.safetensors"
        )
    if "not a valid model identifier" in low or "repository not found" in low or "404" in low:
        return WorkloadError(f"{name!r} is not a model on the Hugging Face Hub (or it is private/gated); check the id")
    return WorkloadError(f"cannot load {name!r}: {msg.splitlines()[0] if msg else type(err).__name__}")


def _config(src: str, name: str, trust_remote_code: bool, local_only: bool):
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(src, trust_remote_code=trust_remote_code, local_files_only=local_only)
    except ValueError as e:  # unknown model_type, or custom code without trust_remote_code
        low = str(e).lower()
        if "trust_remote_code" in low:
            raise WorkloadError(
                f"{name!r} needs its own Python code (trust_remote_code); Speedbook keeps it off unless a "
                "playbook explicitly turns it on"
            ) from None
        raise WorkloadError(
            f"{name!r}: transformers does not know this architecture ({str(e).splitlines()[0]}); "
            "upgrade transformers or pick a supported model"
        ) from None
    except (OSError, KeyError) as e:
        raise _hub_error(name, e) from None
    if getattr(cfg, "auto_map", None) and not trust_remote_code:
        raise WorkloadError(
            f"{name!r} maps to custom code (auto_map in config.json); Speedbook keeps trust_remote_code off unless "
            "a playbook explicitly turns it on"
        )
    return cfg


def infer_task(cfg) -> str:
    """``causal_lm`` when the config names a *ForCausalLM architecture or its type has one, else ``encoder``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    archs = getattr(cfg, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
        return "causal_lm"
    if archs:
        return "encoder"
    return "causal_lm" if cfg.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else "encoder"


def _lm_data(tokenizer) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Held-out tokens (stdlib test split) and calibration windows (train split) in this model's tokenizer."""
    from optimizers.workloads import corpus

    def stream(split: str, limit: int) -> torch.Tensor:
        ids: list[int] = []
        for text in corpus.read_split(split):
            ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
            if tokenizer.eos_token_id is not None:
                ids.append(tokenizer.eos_token_id)
            if len(ids) >= limit:
                break
        return torch.tensor(ids[:limit], dtype=torch.int64)

    test = stream("test", EVAL_TOKENS)
    train = stream("train", CALIB_BATCHES * CALIB_LEN)
    calib = [train[i : i + CALIB_LEN].unsqueeze(0) for i in range(0, len(train) - CALIB_LEN + 1, CALIB_LEN)]
    return test, calib


def load_hf(name_or_path: str, device: str = "cpu", trust_remote_code: bool = False) -> Workload:
    """A workload from a local model directory or a Hugging Face id (safetensors only)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    src, local = _resolve(name_or_path)
    if local:
        _check_local_files(src)
    local_only = local or _offline()
    cfg = _config(src, name_or_path, trust_remote_code, local_only)
    task = infer_task(cfg)
    auto = AutoModelForCausalLM if task == "causal_lm" else AutoModel
    kwargs = dict(dtype=torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code, local_files_only=local_only)
    try:
        model = auto.from_pretrained(src, attn_implementation="sdpa", **kwargs)
    except (ValueError, TypeError) as e:
        if "sdpa" not in str(e).lower() and "attn_implementation" not in str(e).lower():
            raise WorkloadError(f"{name_or_path!r}: cannot build the model ({str(e).splitlines()[0]})") from None
        model = auto.from_pretrained(src, **kwargs)  # architecture without SDPA support
    except (OSError, EnvironmentError) as e:
        raise _hub_error(name_or_path, e) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code, local_files_only=local_only)
    except (OSError, ValueError) as e:
        raise WorkloadError(f"{name_or_path!r} has no usable tokenizer ({str(e).splitlines()[0]})") from None
    model = model.to(device).eval()
    meta = {"config": cfg.to_dict(), "family": cfg.model_type, "source": name_or_path, "trust_remote_code": trust_remote_code}
    if task == "causal_lm":
        test, calib = _lm_data(tokenizer)
        ev = LMEval(token_ids=test, window=256, stride=256, max_windows=64)
    else:
        from optimizers.workloads.minilm import calibration_batches, eval_set

        data = eval_set()
        ev = EncoderEval(sentences=data["sentences"], pairs=[tuple(p) for p in data["pairs"]])
        calib = calibration_batches(tokenizer, data["calibration"])
        meta.update(pooling="mean", normalize=True, embed="optimizers.workloads.minilm:embed")
    name = Path(src).name if local else name_or_path
    return Workload(name=name, task=task, model=model, eval=ev, calibration=calib, tokenizer=tokenizer, device=device, meta=meta)
