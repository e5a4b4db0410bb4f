"""Greedy speculative decoding: a cheap draft proposes up to ``gamma`` tokens, the target checks
them all in one forward and keeps the longest prefix matching its own argmax, plus its own next
token, so the output equals the target's plain greedy decode exactly while the target runs once
per round instead of once per token (Leviathan et al., ICML 2023; Chen et al., 2023). Three
drafts: a small LM sharing the tokenizer, n-gram prompt lookup (Saxena, 2023) and the target's
own first layers (self-speculation, LayerSkip / Draft & Verify).

Caches are transformers ``DynamicCache``s rolled back with ``crop(-tokens_to_remove)``: since
transformers 5.x ``crop`` takes the (negative) number of positions to drop, not the length to keep.
``speculative_greedy_batched`` verifies B requests in one target forward per round (the serving
scenario under load); its batched cache cannot be cropped per row, so rejected slots are masked.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, runtime_checkable

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


# ---------------------------------------------------------------- batched verification (the serving scenario)

@dataclass
class BatchedSpec:
    """What ``speculative_greedy_batched`` returns: each row's tokens and acceptance accounting,
    and the KV cache as it ended: its bytes (the whole (B, L) rectangle) and which slots hold a
    token of their row's context."""

    tokens: list[list[int]]
    stats: list[SpecStats]
    kv_bytes: int  # K and V of every slot, measured from the cache's tensors
    kv_mask: torch.Tensor  # (B, L) 1 where a slot holds a context token; 0 for pads, rejected guesses, finished rows

    @property
    def kv_used_fraction(self) -> float:
        return float(self.kv_mask.float().mean())


@dataclass
class _Row:
    """One request of a batched decode: its context (prompt + emitted), its draft and its stamps."""

    prompt_len: int
    n: int
    draft: DraftSource
    context: list[int]
    stamps: list[float]
    stats: SpecStats = field(default_factory=SpecStats)

    @property
    def left(self) -> int:
        return self.n - (len(self.context) - self.prompt_len)


def left_pad(prompts: list[list[int]], pad_id: int,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(B, W) ids and attention mask, each prompt right-aligned so every row's last token is in the
    last column (W = the longest prompt)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):] = torch.tensor(p, device=device)
        mask[b, width - len(p):] = 1
    return ids, mask


def speculative_greedy_batched(target: torch.nn.Module, prompts: list[list[int]], ns: list[int],
                               drafts: list[DraftSource], gamma: int = 4, pad_id: int = 0,
                               sync: Callable[[], None] = lambda: None,
                               stamps: list[list[float]] | None = None) -> BatchedSpec:
    """``ns[b]`` greedy tokens of ``target`` after ``prompts[b]`` for B requests at once, each equal
    to ``speculative_greedy``'s (so to plain greedy decoding's). One prefill over the left-padded
    prompts (attention mask, explicit position ids); then rounds: every unfinished row's draft
    proposes ``k_b = min(gamma, left_b - 1)`` tokens and the target verifies all rows in ONE forward
    over (B, 1 + G) tokens (G the longest proposal; shorter rows padded) with a 2-D mask over the
    whole cache and per-row position ids; each row keeps its longest matching prefix plus the
    target's next token. Drafting is per row (``drafts[b]`` is row b's own: model and self drafts
    carry a KV cache), verification is batched. With ``stamps`` (one list per row) it appends when
    each token became available."""
    if not prompts or not len(prompts) == len(ns) == len(drafts):
        raise ValueError(f"{len(prompts)} prompts, {len(ns)} lengths and {len(drafts)} drafts: pass one of each per "
                         "request (a draft instance per row: model and self drafts are stateful)")
    if gamma < 1:
        raise ValueError(f"gamma={gamma} is draft tokens per round; it must be >= 1 (4 is typical)")
    if min(ns) < 1 or min(len(p) for p in prompts) < 1:
        raise ValueError(f"every request needs a prompt of >= 1 token and n >= 1 tokens to generate (n = {ns})")
    if stamps is not None and len(stamps) != len(prompts):
        raise ValueError(f"{len(stamps)} stamp lists for {len(prompts)} requests: pass one list per request")
    with torch.inference_mode():
        return _speculative_greedy_batched(target, prompts, ns, drafts, gamma, pad_id, sync, stamps)


def _speculative_greedy_batched(target, prompts, ns, drafts, gamma, pad_id, sync, stamps):
    from transformers import DynamicCache

    cache = DynamicCache(config=target.config)
    if any(cache.is_sliding):
        raise ValueError("batched verification masks one full cache per row; this model has sliding-window layers "
                         "(their cache drops slots): serve it one request at a time (batching: sequential)")
    ids, mask = left_pad(prompts, pad_id, next(target.parameters()).device)  # (B, W) each
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row counts from its first real token; pads at 0, masked
    out = target(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                 logits_to_keep=1)
    first = _greedy_tokens(out.logits, range(len(prompts)))  # B × [1]
    rows = [_Row(len(p), n, d, list(p) + f, s) for p, n, d, f, s in
            zip(prompts, ns, drafts, first, stamps or [[] for _ in prompts])]
    sync()
    t0 = time.perf_counter()
    for row in rows:
        row.stamps.append(t0)
        row.draft.reset(row.context[:row.prompt_len])
    while any(row.left > 0 for row in rows):
        mask = _verify_round(target, cache, rows, mask, gamma, pad_id, sync)
    kv_bytes = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    return BatchedSpec([row.context[row.prompt_len:] for row in rows], [row.stats for row in rows], kv_bytes, mask)


def _verify_round(target, cache, rows: list[_Row], mask: torch.Tensor, gamma: int, pad_id: int,
                  sync: Callable[[], None]) -> torch.Tensor:
    """One round: each live row proposes, the target verifies every row in one forward, each live
    row accepts; returns the cache's mask grown by the round's 1 + G slots. A batched DynamicCache
    cannot be cropped per row, so a row's rejected guesses and pads stay in the cache, masked out
    (0) from here on (reserved but unused KV); a finished row's new slots are all masked."""
    guesses = {b: _propose(row, gamma, sync) for b, row in enumerate(rows) if row.left > 0}
    ids, step = _round_inputs(rows, guesses, pad_id, mask.device)  # (B, 1 + G) each
    positions = mask.sum(-1, keepdim=True) + torch.arange(ids.shape[1], device=mask.device)  # (B, 1 + G)
    mask = torch.cat([mask, step], dim=1)  # (B, L + 1 + G): the whole cache after this forward
    start = mask.shape[1] - ids.shape[1]
    t2 = time.perf_counter()
    logits = target(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True).logits
    best = _greedy_tokens(logits, list(guesses))  # B × (1 + G)
    sync()
    t3 = time.perf_counter()
    for b, guess in guesses.items():
        a = _common_prefix(guess, best[b])
        mask[b, start + 1 + a:] = 0  # the rejected guesses (and pads) stay in the cache, masked out
        _accept(rows[b], guess, a, best[b][a], (t3 - t2) * 1e3, t3, sync)
    return mask


def _propose(row: _Row, gamma: int, sync: Callable[[], None]) -> list[int]:
    k = min(gamma, row.left - 1)
    t1 = time.perf_counter()
    guess = list(row.draft.propose(row.context, k))[:k] if k else []
    sync()
    row.stats.draft_ms += (time.perf_counter() - t1) * 1e3
    return guess


def _round_inputs(rows: list[_Row], guesses: dict[int, list[int]], pad_id: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1 + G) ids and mask of one round: each live row's last token and its guesses, then pads;
    a finished row is all pads (mask 0)."""
    width = 1 + max(len(g) for g in guesses.values())
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    step = torch.zeros_like(ids)
    for b, guess in guesses.items():
        seq = rows[b].context[-1:] + guess
        ids[b, :len(seq)] = torch.tensor(seq, device=device)
        step[b, :len(seq)] = 1
    return ids, step


def _accept(row: _Row, guess: list[int], a: int, bonus: int, target_ms: float, t: float,
            sync: Callable[[], None]) -> None:
    """Row bookkeeping after verification: ``a`` guesses kept plus the target's token; the round's
    shared verification time counts in full for each row (each waited for it)."""
    row.context += guess[:a] + [bonus]
    t1 = time.perf_counter()
    row.draft.accept(row.context)
    sync()
    s = row.stats
    s.draft_ms += (time.perf_counter() - t1) * 1e3
    s.target_ms += target_ms
    s.rounds += 1
    s.proposed += len(guess)
    s.accepted += a
    s.accepted_per_round.append(a)
    row.stamps.extend([t] * (a + 1))


def _greedy_tokens(logits: torch.Tensor, live: Iterable[int]) -> list[list[int]]:
    """Argmax of (B, L, V) logits as B × L ids, refusing non-finite logits in the rows read: the
    argmax of a NaN row is the NaN's index, silently (and a fully masked attention row gone NaN
    would poison every later position through the cache)."""
    top = logits.max(-1)  # the first maximal index, as argmax
    finite = torch.isfinite(top.values).all(-1).tolist()  # (B,)
    bad = [b for b in live if not finite[b]]
    if bad:
        raise FloatingPointError(f"non-finite logits in rows {bad} of a batched forward: an attention backend gave "
                                 "NaN for a fully masked (left-padding) row; serve with attn_implementation "
                                 "'sdpa' or 'eager', which return finite values there")
    return top.indices.tolist()


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
