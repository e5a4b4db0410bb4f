"""Training memory by kind, from torch's own accounting (never process RSS; FACTS.md): parameters
and buffers, gradients and optimizer states are the bytes of the tensors held (tensor subclasses
by what they hold: torchao's 8-bit states are codes plus scales); activations and the step's
peak come from the allocator's events — the CPU allocator's through the profiler's memory events,
the CUDA allocator's peak statistics on a GPU. Activations are the most bytes a forward pass left
alive beyond what was live when it began (what backward will consume, plus the loss's logits)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

from optimizers.measure import stored_bytes, tensors_bytes

FORWARD = "speedbook::forward"


def param_bytes(model: torch.nn.Module) -> int:
    """Parameters and buffers as stored (a frozen NF4 base by its packed codes)."""
    return stored_bytes(model)


def grad_bytes(model: torch.nn.Module) -> int:
    return tensors_bytes([p.grad for p in model.parameters() if p.grad is not None])


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Every tensor in the optimizer's state (moments, step counters), quantized states by their codes and scales."""
    return tensors_bytes([t for state in optimizer.state.values() for t in state.values()])


def trainable_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter elements."""
    params = list({id(p): p for p in model.parameters()}.values())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


class MemoryProbe:
    """Wrap one optimizer step: ``with probe: ... with probe.forward(): loss = ...``. After it,
    ``peak_bytes`` is the most the allocator held beyond what was live at the start (gradients,
    activations, temporaries, states first allocated in this step) and ``activation_bytes`` the
    largest growth over any one forward window."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.peak_bytes = self.activation_bytes = 0

    def __enter__(self) -> "MemoryProbe":
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            from torch.profiler import ProfilerActivity, profile

            self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._prof.__enter__()
        return self

    @contextmanager
    def forward(self) -> Iterator[None]:
        if not self.cuda:
            from torch.profiler import record_function

            with record_function(FORWARD):
                yield
            return
        torch.cuda.synchronize()
        self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated() - self._base)
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        yield
        torch.cuda.synchronize()
        self.activation_bytes = max(self.activation_bytes, torch.cuda.max_memory_allocated() - start)
        self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated() - self._base)

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated() - self._base)
            return
        self._prof.__exit__(*exc)
        if exc[0] is not None:
            return
        events = list(self._prof.profiler.kineto_results.events())
        windows = sorted((e.start_ns(), e.end_ns()) for e in events if e.name() == FORWARD)
        mem = sorted(((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]"))
        live = peak = 0
        w, start_live, act = 0, None, 0
        for t, nbytes in mem:
            while w < len(windows) and t > windows[w][1]:  # past this window's end
                w, start_live = w + 1, None
            inside = w < len(windows) and windows[w][0] <= t <= windows[w][1]
            if inside and start_live is None:
                start_live = live
            live += nbytes
            peak = max(peak, live)
            if inside:
                act = max(act, live - start_live)
        self.peak_bytes, self.activation_bytes = peak, act
