"""The reference LMs' corpus: the Python standard library's own ``.py`` sources, present on
every machine that runs Speedbook. Split by file (never by line, so no file leaks across
splits) with a hash of the relative path: the split is the same on every machine and run."""
from __future__ import annotations

import hashlib
import os
import sysconfig
from functools import lru_cache
from pathlib import Path

SPLITS = ("train", "validation", "test")
_EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(rel_path: str) -> str:
    """``train`` (~90 %), ``validation`` (~5 %) or ``test`` (~5 %), from sha1 of the relative path."""
    bucket = int(hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


def stdlib_files(root: Path | None = None) -> list[str]:
    """Sorted relative POSIX paths of the stdlib's .py files, without tests and site-packages."""
    return list(_stdlib_files(str(root or stdlib_root())))


@lru_cache(maxsize=4)
def _stdlib_files(root: str) -> tuple[str, ...]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _EXCLUDED_DIRS]  # never descend into them
        rel_dir = os.path.relpath(dirpath, root)
        for f in filenames:
            if f.endswith(".py"):
                out.append(Path(rel_dir, f).as_posix().removeprefix("./"))
    return tuple(sorted(out))


def split_files(split: str, root: Path | None = None) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; choose one of {SPLITS}")
    return [f for f in stdlib_files(root) if split_of(f) == split]


def read_split(split: str, root: Path | None = None) -> list[str]:
    """The text of every file in ``split`` (sorted by path; undecodable bytes replaced)."""
    root = root or stdlib_root()
    return [(root / f).read_text(encoding="utf-8", errors="replace") for f in split_files(split, root)]


TRAIN_TOKENS = 1_048_576  # tokens of the train split a workload offers (enough for a few hundred steps without epochs)


def split_tokens(tokenizer, split: str, n_tokens: int, skip: int = 0):
    """Tokens ``skip … skip + n_tokens`` of the split's files in the corpus's fixed file order,
    tokenized with ``tokenizer`` (an int64 tensor)."""
    import torch

    from optimizers.workloads.base import WorkloadError

    ids: list[int] = []
    for text in read_split(split):
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= skip + n_tokens:
            break
    if len(ids) < skip + n_tokens:
        raise WorkloadError(f"the {split} split of this Python's standard library has only {len(ids)} tokens")
    return torch.tensor(ids[skip : skip + n_tokens], dtype=torch.int64)


def train_split(tokenizer, skip: int = 0):
    """The training scenario's split of an LM workload, built once per process on first use."""
    from functools import lru_cache

    from optimizers.workloads.base import LMTrain

    @lru_cache(maxsize=1)
    def build() -> LMTrain:
        return LMTrain(split_tokens(tokenizer, "train", TRAIN_TOKENS, skip=skip))

    return build


def docstring_pairs(split: str, limit: int = 4096) -> list[tuple[str, str]]:
    """(first docstring line, ``def`` signature) of the split's documented functions, in file
    order: a sentence-pair task from the same files as the LMs' corpus (a sentence encoder is
    fine-tuned to match each description with its function)."""
    import ast

    out: list[tuple[str, str]] = []
    for text in read_split(split):
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = (ast.get_docstring(node) or "").strip().splitlines()
                if doc and len(doc[0]) >= 12 and not node.name.startswith("_"):
                    args = ", ".join(a.arg for a in node.args.args)
                    out.append((doc[0].strip(), f"def {node.name}({args})"))
                    if len(out) >= limit:
                        return out
    return out
