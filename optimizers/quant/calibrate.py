"""Calibration: run a model over the workload's calibration batches and capture what the
quantizers need from each Linear's input: per-channel |x| maxima (SmoothQuant, LLM.int8),
mean |x| and raw samples (AWQ), the Hessian 2·XᵀX (GPTQ). ``sequential`` drives
GPTQ/AWQ block by block so block i sees inputs produced by the already-quantized blocks
before it (GPTQ paper §4, "sequential"): the inputs of the first block are captured once and
pushed through one block at a time, as the reference implementation's ``inps`` cache does,
so calibrating L blocks costs L block forwards per batch rather than L²/2."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn


def require_calibration(batches: list[Any], technique: str) -> None:
    if not batches:
        raise ValueError(
            f"{technique} needs calibration data: the workload's `calibration` list is empty; "
            "use a workload that provides calibration batches (e.g. ref-lm) or a technique "
            "without calibration such as int8_weight_only"
        )


def run_batch(model: nn.Module, batch: Any) -> Any:
    """One forward on a calibration batch: LongTensor (1, T) ids, a dict of inputs, an image
    tensor, or an (inputs, labels) pair."""
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    if isinstance(batch, dict):
        kw = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()}
        return model(**kw)
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if batch.dtype in (torch.int64, torch.int32) and _is_hf(model):
        return model(input_ids=batch.to(dev), use_cache=False)
    return model(batch.to(dev))


def _is_hf(model: nn.Module) -> bool:
    return hasattr(model, "config") and hasattr(model, "get_input_embeddings")


@torch.no_grad()
def forward_all(model: nn.Module, batches: Iterable[Any]) -> None:
    for b in batches:
        run_batch(model, b)


class _Stop(Exception):
    """Raised by a hook to end a calibration forward early (after the block of interest)."""


class InputCollector:
    """Forward pre-hooks on named Linears; each input flattened to (tokens, K) float32 goes
    to ``on_input(name, x)``. Use as a context manager."""

    def __init__(self, model: nn.Module, names: Iterable[str], on_input: Callable[[str, torch.Tensor], None]):
        self.model, self.names, self.on_input = model, list(names), on_input
        self.handles: list = []

    def __enter__(self):
        for n in self.names:
            mod = self.model.get_submodule(n)
            self.handles.append(mod.register_forward_pre_hook(self._hook(n)))
        return self

    def _hook(self, name):
        def hook(mod, args):
            x = args[0].detach()
            mask = self._mask
            if mask is not None and tuple(x.shape[:-1]) == tuple(mask.shape):
                x = x[mask.to(x.device)]  # padding positions carry no signal: drop them (tokens, K)
            self.on_input(name, x.reshape(-1, x.shape[-1]).float())

        return hook

    _mask: torch.Tensor | None = None

    def run(self, batches: "Iterable[Any] | BlockFeed") -> None:
        if isinstance(batches, BlockFeed):
            batches.run(self)
            return
        with torch.no_grad():
            for b in batches:
                m = b.get("attention_mask") if isinstance(b, dict) else None
                self._mask = m.bool() if torch.is_tensor(m) else None
                run_batch(self.model, b)
        self._mask = None

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def channel_absmax(model: nn.Module, names: Iterable[str], batches) -> dict[str, torch.Tensor]:
    """max over calibration tokens of |x[:, j]| for each input channel j of each named Linear."""
    out: dict[str, torch.Tensor] = {}

    def on(name, x):
        m = x.abs().amax(dim=0)
        out[name] = m if name not in out else torch.maximum(out[name], m)

    with InputCollector(model, names, on) as c:
        c.run(batches)
    return out


def collect_inputs(model: nn.Module, names: Iterable[str], batches, max_tokens: int = 8192) -> dict[str, torch.Tensor]:
    """The calibration inputs of each named Linear, (tokens, K) float32, capped at max_tokens."""
    got: dict[str, list[torch.Tensor]] = defaultdict(list)
    count: dict[str, int] = defaultdict(int)

    def on(name, x):
        if count[name] < max_tokens:
            x = x[: max_tokens - count[name]]
            got[name].append(x.detach())  # stays on the model's device
            count[name] += x.shape[0]

    with InputCollector(model, names, on) as c:
        c.run(batches)
    return {n: torch.cat(v) for n, v in got.items()}


def collect_hessians(model: nn.Module, names: Iterable[str], batches) -> dict[str, torch.Tensor]:
    """GPTQ's H = 2/n · Σ xᵀx (K, K) float32 for each named Linear (running mean over tokens)."""
    H: dict[str, torch.Tensor] = {}
    n: dict[str, int] = defaultdict(int)

    def on(name, x):
        x = x.to(torch.float32)
        t = x.shape[0]
        if name not in H:
            H[name] = torch.zeros(x.shape[1], x.shape[1], device=x.device)
        H[name] *= n[name] / (n[name] + t)
        n[name] += t
        xs = x * (2.0 / n[name]) ** 0.5
        H[name] += xs.t() @ xs

    with InputCollector(model, names, on) as c:
        c.run(batches)
    return H


# ---------------------------------------------------------------- structure


class _Captured:
    """One calibration batch as the first block sees it: its positional and keyword inputs
    (hidden states, position embeddings, attention mask…) and the batch's padding mask."""

    def __init__(self, args: tuple, kwargs: dict, mask: torch.Tensor | None):
        self.args, self.kwargs, self.mask = list(args), dict(kwargs), mask

    @property
    def hidden(self) -> torch.Tensor:
        return self.args[0] if self.args else self.kwargs["hidden_states"]

    @hidden.setter
    def hidden(self, x: torch.Tensor) -> None:
        if self.args:
            self.args[0] = x
        else:
            self.kwargs["hidden_states"] = x


class BlockFeed:
    """Runs one block over the cached inputs of every calibration batch (an InputCollector
    accepts it in place of the batches)."""

    def __init__(self, block: nn.Module, items: list[_Captured]):
        self.block, self.items = block, items

    def run(self, collector: "InputCollector") -> None:
        with torch.no_grad():
            for it in self.items:
                collector._mask = it.mask
                self.block(*it.args, **it.kwargs)
        collector._mask = None

    def advance(self) -> None:
        """Replace each cached input by this block's output: the next block's input."""
        with torch.no_grad():
            for it in self.items:
                out = self.block(*it.args, **it.kwargs)
                it.hidden = out[0] if isinstance(out, (tuple, list)) else out


def capture_block_inputs(model: nn.Module, first: nn.Module, batches) -> list[_Captured]:
    """The inputs of ``first`` for every calibration batch, from one forward each that stops
    there. Empty when the block is not on the forward path of these batches."""
    items: list[_Captured] = []
    mask: list[torch.Tensor | None] = [None]

    def grab(mod, args, kwargs):
        if not torch.is_tensor(args[0] if args else kwargs.get("hidden_states")):
            return None
        items.append(_Captured(args, kwargs, mask[0]))
        raise _Stop()

    h = first.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            for b in batches:
                m = b.get("attention_mask") if isinstance(b, dict) else None
                mask[0] = m.bool() if torch.is_tensor(m) else None
                try:
                    run_batch(model, b)
                except _Stop:
                    pass
    finally:
        h.remove()
    return items if len(items) == len(list(batches)) else []


def sequential(model: nn.Module, linear_names: Iterable[str], batches) -> Iterator[tuple[list[str], Any]]:
    """Yields (Linears of one block, what to calibrate them on) in block order; the caller
    quantizes the block before asking for the next, and the cached inputs then advance through
    the quantized block (and through blocks with nothing selected). Linears outside the repeated
    blocks (an lm_head, a CNN's layers) are calibrated on full forwards of the partly quantized
    model, as is everything when the first block's inputs cannot be captured."""
    names = list(linear_names)
    found = _block_list(model)
    per_block = [] if found is None else [(blk, [n for n in names if n.startswith(f"{found[0]}{i}.")])
                                          for i, blk in enumerate(found[1])]
    first = next((i for i, (_, g) in enumerate(per_block) if g), None)
    items = capture_block_inputs(model, per_block[first][0], batches) if first is not None else []
    if not items:
        for _, group in blocks(model, names):
            yield group, batches
        return
    for blk, group in per_block[first:]:
        feed = BlockFeed(blk, items)
        if group:
            yield group, feed
        feed.advance()
    items.clear()
    for blk, group in blocks(model, names):
        if blk is None:
            yield group, batches


def layer_hessians(model: nn.Module, linear_names: Iterable[str], batches) -> Iterator[tuple[str, nn.Linear, torch.Tensor]]:
    """(name, Linear, H) for each named Linear, block after block of the model (``sequential``):
    the caller replaces the layer before asking for the next, so later blocks' Hessians come from
    inputs that passed the already-replaced blocks (GPTQ's and SparseGPT's order)."""
    for group, feed in sequential(model, linear_names, batches):
        hessians = collect_hessians(model, group, feed)
        for name in group:
            yield name, model.get_submodule(name), hessians[name]


def _block_list(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The repeated blocks: the largest nn.ModuleList, with its name prefix ("model.layers.")."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    best = max(lists, key=lambda nm: len(nm[1]), default=None)
    return None if best is None else (best[0] + "." if best[0] else "", best[1])


def blocks(model: nn.Module, linear_names: Iterable[str]) -> list[tuple[nn.Module | None, list[str]]]:
    """Group Linears by repeated block (element of the largest nn.ModuleList), in block order.
    Linears outside any block become their own group (module None: run the whole model)."""
    best = _block_list(model)
    names = list(linear_names)
    groups: list[tuple[nn.Module | None, list[str]]] = []
    if best is not None:
        prefix = best[0]
        for i, blk in enumerate(best[1]):
            p = f"{prefix}{i}."
            inside = [n for n in names if n.startswith(p)]
            if inside:
                groups.append((blk, inside))
        done = {n for _, g in groups for n in g}
    else:
        done = set()
    rest = [n for n in names if n not in done]
    # Linears outside blocks (e.g. a CNN's classifier): order by first use is not needed since
    # each is captured from a full forward of the partly-quantized model.
    groups.extend((None, [n]) for n in rest)
    return groups


def shared_input_groups(model: nn.Module, names: list[str], batch: Any) -> list[tuple[list[str], str | None]]:
    """Linears that read the very same input tensor (q/k/v, gate/up) form a group; the group's
    producer is the name of the norm module whose output that tensor is, if any.
    Found in one traced forward by tensor identity. Returns [(linear names, norm name | None)]."""
    keep: list[torch.Tensor] = []  # hold tensors so ids stay unique during the trace
    norm_out: dict[int, str] = {}
    lin_in: dict[str, int] = {}
    handles = []

    def on_norm(n):
        def hook(mod, args, out):  # returns None: the output is left untouched
            keep.append(out)
            norm_out[id(out)] = n

        return hook

    def on_linear(n):
        def hook(mod, args):
            keep.append(args[0])
            lin_in.setdefault(n, id(args[0]))

        return hook

    for n, m in model.named_modules():
        if is_norm(m):
            handles.append(m.register_forward_hook(on_norm(n)))
    for n in names:
        handles.append(model.get_submodule(n).register_forward_pre_hook(on_linear(n)))
    try:
        with torch.no_grad():
            run_batch(model, batch)
    finally:
        for h in handles:
            h.remove()
    by_input: dict[int, list[str]] = defaultdict(list)
    for n in names:
        if n in lin_in:
            by_input[lin_in[n]].append(n)
    return [(g, norm_out.get(i)) for i, g in by_input.items()]


def is_norm(m: nn.Module) -> bool:
    """LayerNorm / RMSNorm-like: a 1-D ``weight`` and 'Norm' in the class name (not BatchNorm)."""
    cls = type(m).__name__
    w = getattr(m, "weight", None)
    return "Norm" in cls and "Batch" not in cls and isinstance(w, torch.Tensor) and w.dim() == 1


def calibrated_copy(workload: Any, technique: str, include_lm_head: bool = False):
    """The prologue every calibrated quantizer shares: calibration present, a deep copy of the
    model, the Linear filter, and the Linears it selects → (model, predicate, {name: Linear})."""
    from optimizers.quant.modules import copy_model, default_predicate, require_linears

    require_calibration(workload.calibration, technique)
    model = copy_model(workload.model)
    pred = default_predicate(model, include_lm_head)
    return model, pred, require_linears(model, pred)
