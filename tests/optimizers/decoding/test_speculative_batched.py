"""Batched speculative verification: B requests decoded together, drafts per row, one target
forward per round over (B, 1 + G) tokens. Every row equals plain greedy decoding token for token
(fp32, left-padded prompts of different lengths, both attention backends), its acceptance
accounting equals the one-request loop's, rows that finish early stop advancing with their slots
masked and every live row's positions continue its own sequence, and the cache's reserved bytes
cover the used ones."""
import pytest
import torch

from optimizers.decoding.speculative import (
    ModelDraft, PromptLookupDraft, SelfSpeculativeDraft, left_pad, speculative_greedy, speculative_greedy_batched,
)
from optimizers.measure import greedy_decode
from optimizers.scenarios.serving import kv_bytes_per_token
from optimizers.workloads import load_workload


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run faster on one thread


@pytest.fixture(scope="module")
def models():
    return {name: load_workload(name) for name in ("tiny-llama", "ref-lm", "ref-lm-draft")}


def _requests(wl, seed: int, b: int = 4) -> tuple[list[list[int]], list[int]]:
    """``b`` seeded windows of the held-out stream, 1–24 tokens long, wanting 1–14 tokens each."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 25, (b,), generator=g).tolist()
    starts = torch.randint(0, len(wl.eval.token_ids) - 25, (b,), generator=g).tolist()
    ns = torch.randint(1, 15, (b,), generator=g).tolist()
    return [wl.eval.token_ids[s:s + n].tolist() for s, n in zip(starts, lengths)], ns


def _greedy(model, prompt: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        return greedy_decode(model, torch.tensor([prompt]), n)[0][0].tolist()


DRAFTS = {
    "prompt_lookup": lambda models, target: PromptLookupDraft(),
    "self": lambda models, target: SelfSpeculativeDraft(target, layers=1),
    "model": lambda models, target: ModelDraft(models["ref-lm-draft"].model),
}
CASES = [("tiny-llama", "prompt_lookup"), ("tiny-llama", "self"),
         ("ref-lm", "prompt_lookup"), ("ref-lm", "self"), ("ref-lm", "model")]


@pytest.mark.parametrize("workload,source", CASES)
@pytest.mark.parametrize("gamma", (1, 4))
def test_every_row_equals_greedy_and_the_one_request_loop(models, workload, source, gamma):
    target = models[workload].model
    for seed in (gamma, 50 + gamma):
        prompts, ns = _requests(models[workload], seed)
        out = speculative_greedy_batched(target, prompts, ns, [DRAFTS[source](models, target) for _ in prompts],
                                         gamma)
        for p, n, tokens, stats in zip(prompts, ns, out.tokens, out.stats):
            assert tokens == _greedy(target, p, n), (workload, source, gamma, len(p), n)
            _, alone, _ = speculative_greedy(target, torch.tensor([p]), n, DRAFTS[source](models, target), gamma)
            # same proposals from the same contexts, so the same rounds: accounting per request is the loop's
            assert stats.accepted_per_round == alone.accepted_per_round
            assert (stats.proposed, stats.accepted, stats.rounds) == (alone.proposed, alone.accepted, alone.rounds)


@pytest.mark.parametrize("attn", ("sdpa", "eager"))
def test_left_padding_leaves_no_nan_and_stays_exact(attn):
    """A 1-token prompt beside a 24-token one: 23 pad queries see only pads at prefill (fully masked
    rows). Both backends return finite values there, so no NaN reaches the cache."""
    wl = load_workload("tiny-llama")
    target = wl.model.eval()
    target.set_attn_implementation(attn)
    prompts = [wl.eval.token_ids[:1].tolist(), wl.eval.token_ids[100:124].tolist(), wl.eval.token_ids[7:9].tolist()]
    ns = [10, 6, 9]
    out = speculative_greedy_batched(target, prompts, ns, [PromptLookupDraft() for _ in prompts], 3)
    assert out.tokens == [_greedy(target, p, n) for p, n in zip(prompts, ns)]
    from transformers import DynamicCache

    cache = DynamicCache(config=target.config)
    ids, mask = left_pad(prompts, 0)
    with torch.inference_mode():
        logits = target(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                        cache=cache, use_cache=True).logits
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(t).all() for layer in cache.layers for t in (layer.keys, layer.values))


class _Recording(torch.nn.Module):
    """The target, recording each forward's ids, mask and positions; ``nan_rows`` poisons the
    logits of those rows (a backend that turned a fully masked row into NaN)."""

    def __init__(self, model: torch.nn.Module, nan_rows: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.model, self.config, self.nan_rows, self.calls = model, model.config, nan_rows, []

    def forward(self, **kw):
        self.calls.append({k: kw[k].clone() for k in ("input_ids", "attention_mask", "position_ids")})
        out = self.model(**kw)
        for b in self.nan_rows:
            out.logits[b] = float("nan")
        return out


class _Stub:
    """Knows the target's greedy sequence ``ref`` (prompt + output); proposes the right tokens for
    the first ``right`` positions of a round, then ``wrong``."""

    name = "stub"

    def __init__(self, ref: list[int], right: int, wrong: int) -> None:
        self.ref, self.right, self.wrong = ref, right, wrong

    def reset(self, prompt_ids):
        pass

    def accept(self, context):
        assert context == self.ref[:len(context)]

    def propose(self, context, k):
        true = self.ref[len(context):len(context) + k]
        return true[:self.right] + [self.wrong] * (k - min(self.right, k))


def test_rows_that_finish_early_stop_and_live_rows_keep_their_own_positions(models):
    """Row 0 wants 1 token (the prefill's: no round), row 1 wants 2 (one round proposing nothing),
    row 2 wants 12. Per round: a finished row's slots are all masked and its ids are pads; a live
    row's first position is its prompt length + tokens emitted − 1 and its first id the last token
    emitted; the cache ends holding exactly prompt + output − 1 tokens per row."""
    wl = models["tiny-llama"]
    rec = _Recording(wl.model)
    prompts = [wl.eval.token_ids[:5].tolist(), wl.eval.token_ids[40:49].tolist(), wl.eval.token_ids[90:93].tolist()]
    ns = [1, 2, 12]
    refs = [_greedy(wl.model, p, n) for p, n in zip(prompts, ns)]
    never = next(t for t in range(512) if all(t not in r for r in refs))
    drafts = [_Stub(p + r, right=2, wrong=never) for p, r in zip(prompts, refs)]
    out = speculative_greedy_batched(rec, prompts, ns, drafts, gamma=4, pad_id=0)
    assert out.tokens == refs
    assert [s.rounds for s in out.stats] == [0, 1, 4]
    # row 2, left 11: k=4, accept 2 (+1) -> 8: k=4, +3 -> 5: k=4, +3 -> 2: k=1, accept 1 (+1)
    assert out.stats[2].accepted_per_round == [2, 2, 2, 1] and out.stats[1].accepted_per_round == [0]
    prefill, rounds = rec.calls[0], rec.calls[1:]
    assert len(rounds) == 4 and prefill["input_ids"].shape == (3, 9)
    assert prefill["position_ids"][0].tolist() == [0] * 4 + list(range(5))  # left pads at 0, masked
    for r, call in enumerate(rounds):
        width = call["input_ids"].shape[1]
        for b, stats in enumerate(out.stats):
            new = call["attention_mask"][b, -width:]
            if r >= stats.rounds:  # finished: nothing of it is attended, nothing advances
                assert new.sum() == 0 and (call["input_ids"][b] == 0).all(), (r, b)
                continue
            emitted = 1 + sum(a + 1 for a in stats.accepted_per_round[:r])
            assert call["position_ids"][b].tolist() == list(range(len(prompts[b]) + emitted - 1,
                                                                  len(prompts[b]) + emitted - 1 + width))
            assert call["input_ids"][b, 0] == refs[b][emitted - 1]
            assert new.sum() == 1 + min(4, ns[b] - emitted - 1)  # the last token and this round's guesses
    assert out.kv_mask.sum(-1).tolist() == [len(p) + n - 1 for p, n in zip(prompts, ns)]


def test_known_acceptance_rates(models):
    """The target drafting for itself accepts everything (α = 1, γ + 1 tokens a round but the last);
    a draft that is always wrong accepts nothing (α = 0, one token a round)."""
    wl = models["ref-lm"]
    target = wl.model
    prompts, ns = _requests(wl, seed=9)
    out = speculative_greedy_batched(target, prompts, ns, [ModelDraft(target) for _ in prompts], 3)
    refs = [_greedy(target, p, n) for p, n in zip(prompts, ns)]
    assert out.tokens == refs
    for n, s in zip(ns, out.stats):
        assert s.accepted == s.proposed and s.rounds == -(-(n - 1) // 4)  # ceil((n − 1) / (γ + 1))
        assert s.acceptance_rate == (1.0 if n > 2 else 0.0)  # n ≤ 2: rounds propose nothing
    never = next(t for t in range(4096) if all(t not in r for r in refs))
    drafts = [_Stub(p + r, right=0, wrong=never) for p, r in zip(prompts, refs)]
    out = speculative_greedy_batched(target, prompts, ns, drafts, 3)
    assert out.tokens == refs
    assert all(s.accepted == 0 and s.rounds == n - 1 for n, s in zip(ns, out.stats))
    assert all(s.mean_accepted_length == 1.0 for n, s in zip(ns, out.stats) if n > 1)


def test_the_cache_reserves_the_rectangle_and_uses_the_context(models):
    """Reserved: every slot of the (B, L) cache, as K/V bytes (rejected guesses, pads and finished
    rows' slots included); used: the slots holding a context token. A wrong draft leaves γ rejected
    slots a round, so used < reserved."""
    wl = models["tiny-llama"]
    prompts, ns = _requests(wl, seed=4)
    refs = [_greedy(wl.model, p, n) for p, n in zip(prompts, ns)]
    never = next(t for t in range(512) if all(t not in r for r in refs))
    drafts = [_Stub(p + r, right=1, wrong=never) for p, r in zip(prompts, refs)]
    out = speculative_greedy_batched(wl.model, prompts, ns, drafts, 4)
    b, length = out.kv_mask.shape
    assert out.kv_bytes == b * length * kv_bytes_per_token(wl.model)
    used = int(out.kv_mask.sum()) * kv_bytes_per_token(wl.model)
    assert used == sum(len(p) + n - 1 for p, n in zip(prompts, ns)) * kv_bytes_per_token(wl.model)
    assert out.kv_bytes * out.kv_used_fraction == pytest.approx(used)
    assert used < out.kv_bytes


def test_non_finite_logits_are_refused(models):
    wl = models["tiny-llama"]
    prompts = [wl.eval.token_ids[:4].tolist(), wl.eval.token_ids[10:20].tolist()]
    with pytest.raises(FloatingPointError, match="fully masked"):
        speculative_greedy_batched(_Recording(wl.model, nan_rows=(0,)), prompts, [4, 4],
                                   [PromptLookupDraft(), PromptLookupDraft()])


def test_bad_input_says_what_to_fix(models):
    target = models["tiny-llama"].model
    with pytest.raises(ValueError, match="one of each per request"):
        speculative_greedy_batched(target, [[1, 2]], [3, 3], [PromptLookupDraft()])
    with pytest.raises(ValueError, match="gamma=0"):
        speculative_greedy_batched(target, [[1, 2]], [3], [PromptLookupDraft()], gamma=0)
    with pytest.raises(ValueError, match="prompt of >= 1 token"):
        speculative_greedy_batched(target, [[]], [3], [PromptLookupDraft()])
    with pytest.raises(ValueError, match="one list per request"):
        speculative_greedy_batched(target, [[1, 2]], [3], [PromptLookupDraft()], stamps=[[], []])
