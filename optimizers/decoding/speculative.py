"""Greedy speculative decoding: a cheap draft proposes up to ``gamma`` tokens, the target checks
them all in one forward and keeps the longest prefix matching its own argmax, plus its own next
token, so the output equals the target's plain greedy decode exactly while the target runs once
per round instead of once per token (Leviathan et al., ICML 2023; Chen et al., 2023). Three
drafts: a small LM sharing the tokenizer, n-gram prompt lookup (Saxena, 2023) and the target's
own first layers (self-speculation, LayerSkip / Draft & Verify).

Caches are transformers ``DynamicCache``s rolled back with ``crop(-tokens_to_remove)``: since
transformers 5.x ``crop`` takes the (negative) number of positions to drop, not the length to keep.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import torch


@dataclass
class SpecStats:
    proposed: int = 0  # draft tokens the target verified, in total
    accepted: int = 0  # of those, the ones the target kept
    rounds: int = 0  # target forwards after the prefill (each emits accepted + 1 tokens)
    target_ms: float = 0.0  # in the verification forwards
    draft_ms: float = 0.0  # in the draft's propose + accept calls (its prompt prefill, in reset, excluded)
    accepted_per_round: list[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        """The estimate of alpha (Leviathan et al.): accepted / proposed; 0 when nothing was proposed."""
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per round, the target's correction/bonus token included."""
        return (self.accepted + self.rounds) / self.rounds if self.rounds else 0.0

    @property
    def draft_tokens_ms_per_token(self) -> float:
        return self.draft_ms / self.proposed if self.proposed else 0.0

    @property
    def target_ms_per_round(self) -> float:
        return self.target_ms / self.rounds if self.rounds else 0.0

    @property
    def cost_ratio(self) -> float:
        """c in ``analytical_speedup``: one draft token's time over one target round's."""
        return self.draft_tokens_ms_per_token / self.target_ms_per_round if self.rounds else 0.0


def expected_tokens_per_round(alpha: float, gamma: int) -> float:
    """E[tokens per round] = (1 - alpha^(gamma+1)) / (1 - alpha), gamma + 1 at alpha = 1 (their Eq. 1)."""
    _check_alpha_gamma(alpha, gamma)
    return gamma + 1.0 if alpha == 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)


def analytical_speedup(alpha: float, gamma: int, c: float) -> float:
    """Expected walltime improvement (Leviathan et al., Theorem 3.8):
    (1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1)), with c = draft step time / target step time."""
    if c < 0:
        raise ValueError(f"c={c} is a cost ratio (draft time per token / target time per round); it must be >= 0")
    return expected_tokens_per_round(alpha, gamma) / (gamma * c + 1)


def _check_alpha_gamma(alpha: float, gamma: int) -> None:
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha} is an acceptance rate; it must be in [0, 1]")
    if gamma < 1:
        raise ValueError(f"gamma={gamma} is draft tokens per round; it must be >= 1")


@runtime_checkable
class DraftSource(Protocol):
    name: str

    def reset(self, prompt_ids: list[int]) -> None:
        """Once per generation, after the target's prefill."""

    def propose(self, context: list[int], k: int) -> list[int]:
        """Up to ``k`` tokens continuing ``context`` (prompt + everything emitted); may be fewer, even none."""

    def accept(self, context: list[int]) -> None:
        """After each verification, with the new full context: roll back any state past it."""


def speculative_greedy(target: torch.nn.Module, prompt: torch.Tensor, n: int, draft: DraftSource, gamma: int = 4,
                       sync: Callable[[], None] = lambda: None,
                       stamps: list[float] | None = None) -> tuple[torch.Tensor, SpecStats, float]:
    """``n`` greedy tokens of ``target`` after ``prompt`` (1, T), equal to ``greedy_decode``'s, via
    draft-and-verify. Returns the tokens (1, n), the acceptance accounting and the milliseconds of
    everything after the target's prefill (the draft's reset included). The first token comes from
    the prefill, so ``n - 1`` tokens are left to the rounds; a round proposes at most
    ``min(gamma, left - 1)`` so it never emits past ``n``. With ``stamps`` (the serving scenario)
    it appends when each token became available: the tokens of one round share its time."""
    if gamma < 1:
        raise ValueError(f"gamma={gamma} is draft tokens per round; it must be >= 1 (4 is typical)")
    if n < 1:
        raise ValueError(f"n={n} is tokens to generate; it must be >= 1")
    if prompt.dim() != 2 or prompt.shape[0] != 1 or prompt.shape[1] < 1:
        raise ValueError(f"prompt has shape {tuple(prompt.shape)}; pass one sequence of token ids as (1, T), "
                         "e.g. ids.unsqueeze(0)")
    with torch.inference_mode():
        return _speculative_greedy(target, prompt, n, draft, gamma, sync, stamps)


def _speculative_greedy(target, prompt, n, draft, gamma, sync, stamps):
    from transformers import DynamicCache

    cache = DynamicCache(config=target.config)  # invariant: holds every context token but the last
    first = target(input_ids=prompt, cache=cache, use_cache=True).logits[0, -1].argmax()
    context = prompt[0].tolist() + [int(first)]
    t, stats = prompt.shape[1], SpecStats()
    sync()
    t0 = time.perf_counter()
    if stamps is not None:
        stamps.append(t0)
    draft.reset(context[:t])
    while len(context) - t < n:
        k = min(gamma, n - (len(context) - t) - 1)
        t1 = time.perf_counter()
        guess = list(draft.propose(context, k))[:k] if k else []
        sync()
        t2 = time.perf_counter()
        seen = len(context) - 1
        ids = torch.tensor([context[-1:] + guess], device=prompt.device)  # (1, 1 + k)
        positions = torch.arange(seen, seen + ids.shape[1], device=prompt.device).unsqueeze(0)
        best = target(input_ids=ids, position_ids=positions, cache=cache, use_cache=True).logits[0].argmax(-1).tolist()
        a = next((i for i, (g, b) in enumerate(zip(guess, best)) if g != b), len(guess))
        context += guess[:a] + [best[a]]
        if len(guess) > a:
            cache.crop(-(len(guess) - a))  # drop the rejected guesses' K/V
        t3 = time.perf_counter()
        draft.accept(context)
        sync()
        t4 = time.perf_counter()
        stats.rounds += 1
        stats.proposed += len(guess)
        stats.accepted += a
        stats.accepted_per_round.append(a)
        stats.target_ms += (t3 - t2) * 1e3
        stats.draft_ms += (t2 - t1 + t4 - t3) * 1e3
        if stamps is not None:
            stamps.extend([t3] * (a + 1))
    sync()
    decode_ms = (time.perf_counter() - t0) * 1e3
    return torch.tensor([context[t:]], device=prompt.device), stats, decode_ms


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


class _CachedDraft:
    """Greedy proposals from a causal LM with its own KV cache, which always holds a prefix of the
    tokens it was fed (``self.fed``); on a new context it is cropped to the common prefix and fed the rest."""

    name = "cached"

    def __init__(self, model: torch.nn.Module, config) -> None:
        self.model, self.config = model, config
        self.device = next(model.parameters()).device
        self.cache, self.fed = None, []

    def _logits(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:  # (1, L) -> (1, >=1, V)
        raise NotImplementedError

    def _feed(self, tokens: list[int]) -> int:
        ids = torch.tensor([tokens], device=self.device)
        positions = torch.arange(len(self.fed), len(self.fed) + len(tokens), device=self.device).unsqueeze(0)
        self.fed += tokens
        return int(self._logits(ids, positions)[0, -1].argmax())

    def reset(self, prompt_ids: list[int]) -> None:
        from transformers import DynamicCache

        self.cache, self.fed = DynamicCache(config=self.config), []
        with torch.inference_mode():
            if len(prompt_ids) > 1:
                self._feed(list(prompt_ids[:-1]))  # the draft's prefill; the last token is fed with the first proposal

    def accept(self, context: list[int]) -> None:
        keep = min(_common_prefix(self.fed, context), len(context) - 1)
        if keep < len(self.fed):
            self.cache.crop(-(len(self.fed) - keep))
            self.fed = self.fed[:keep]

    def propose(self, context: list[int], k: int) -> list[int]:
        if k < 1:
            return []
        if self.cache is None:
            self.reset(context[:1])
        self.accept(context)
        with torch.inference_mode():
            out = [self._feed(list(context[len(self.fed):]))]
            while len(out) < k:
                out.append(self._feed(out[-1:]))
        return out


class ModelDraft(_CachedDraft):
    """A small causal LM sharing the target's tokenizer (e.g. ``ref-lm-draft`` for ``ref-lm``)."""

    name = "model"

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model, model.config)

    def _logits(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, position_ids=positions, cache=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits  # (1, 1, V)


class SelfSpeculativeDraft(_CachedDraft):
    """The target's first ``layers`` decoder layers, then its final norm and LM head: the same
    weights (nothing copied), a shallower and cheaper forward, its own KV cache. Llama-style
    models: ``model.model.layers``, ``model.model.norm``, ``model.lm_head``."""

    name = "self"

    def __init__(self, target: torch.nn.Module, layers: int = 1) -> None:
        base = getattr(target, "model", None)
        if not all(hasattr(o, a) for o, a in ((base, "layers"), (base, "norm"), (target, "lm_head"))):
            raise ValueError(f"{type(target).__name__} is not Llama-style (model.model.layers, model.model.norm, "
                             "model.lm_head); use ModelDraft or PromptLookupDraft for it")
        total = len(base.layers)
        if not 1 <= layers < total:
            raise ValueError(f"layers={layers} must be in 1..{total - 1} (the target has {total} decoder layers; "
                             "a draft as deep as the target saves nothing)")
        config = copy.deepcopy(base.config)
        config.num_hidden_layers = layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:layers]
        shallow = copy.copy(base)  # the same submodules and parameters, but its own module table and config
        shallow._modules = dict(base._modules)
        shallow.layers = torch.nn.ModuleList(base.layers[:layers])
        shallow.config = config
        super().__init__(shallow, config)
        self.layers, self.lm_head = layers, target.lm_head

    def _logits(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        h = self.model(input_ids=ids, position_ids=positions, cache=self.cache, use_cache=True).last_hidden_state
        return self.lm_head(h[:, -1:])  # (1, 1, V): only the last position is ever read


class PromptLookupDraft:
    """Prompt lookup (Saxena, 2023): find the most recent earlier occurrence of the context's last
    ``ngram`` tokens, longest n-gram first (``ngram_max`` down to ``ngram_min``), and propose what
    followed it. No model: free to run, good when the output copies its input (code, edits, RAG)."""

    name = "prompt_lookup"

    def __init__(self, ngram_max: int = 3, ngram_min: int = 1) -> None:
        if not 1 <= ngram_min <= ngram_max:
            raise ValueError(f"ngram_min={ngram_min}, ngram_max={ngram_max}: need 1 <= ngram_min <= ngram_max "
                             "(defaults 1 and 3)")
        self.ngram_max, self.ngram_min = ngram_max, ngram_min

    def reset(self, prompt_ids: list[int]) -> None:
        pass

    def accept(self, context: list[int]) -> None:
        pass

    def propose(self, context: list[int], k: int) -> list[int]:
        if k < 1:
            return []
        for g in range(min(self.ngram_max, len(context) - 1), self.ngram_min - 1, -1):
            tail = context[-g:]
            for i in range(len(context) - g - 1, -1, -1):  # earlier starts, most recent first
                if context[i:i + g] == tail:
                    return context[i + g:i + g + k]
        return []
