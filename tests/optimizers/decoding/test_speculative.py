"""Greedy speculative decoding: every draft source reproduces the target's own greedy decode token
for token, the acceptance accounting is exact for drafts of known quality, and the paper's
formulas give the hand-computed values."""
import math

import pytest
import torch

from optimizers.decoding.speculative import (
    ModelDraft, PromptLookupDraft, SelfSpeculativeDraft, SpecStats, analytical_speedup, expected_tokens_per_round,
    speculative_greedy,
)
from optimizers.measure import greedy_decode
from optimizers.workloads import load_workload

N = 12  # tokens generated per run: enough for several rounds at gamma 5, cheap on a shared CPU
GAMMAS = (1, 3, 5)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run faster on one thread


@pytest.fixture(scope="module")
def ref_lm():
    return load_workload("ref-lm"), load_workload("ref-lm-draft")


@pytest.fixture(scope="module")
def tiny():
    return load_workload("tiny-llama")


def _prompt(wl, seed: int, length: int = 16) -> torch.Tensor:
    """A seeded random window of the held-out stream: (1, length)."""
    g = torch.Generator().manual_seed(seed)
    start = int(torch.randint(0, len(wl.eval.token_ids) - length, (1,), generator=g))
    return wl.eval.token_ids[start:start + length].unsqueeze(0)


def _greedy(model, prompt, n=N) -> torch.Tensor:
    with torch.inference_mode():
        return greedy_decode(model, prompt, n)[0]


def _check_exact(target, prompt, draft, gamma, ref):
    out, stats, decode_ms = speculative_greedy(target, prompt, N, draft, gamma)
    assert out.shape == (1, N)
    assert torch.equal(out, ref), f"{draft.name} gamma={gamma}: {out.tolist()} != greedy {ref.tolist()}"
    assert stats.accepted + stats.rounds == N - 1  # each round emits accepted + 1; the prefill emitted the first
    assert sum(stats.accepted_per_round) == stats.accepted and len(stats.accepted_per_round) == stats.rounds
    assert 0 <= stats.accepted <= stats.proposed <= gamma * stats.rounds
    assert stats.target_ms + stats.draft_ms <= decode_ms + 1e-6  # disjoint spans inside the timed decode


@pytest.mark.parametrize("gamma", GAMMAS)
def test_every_draft_reproduces_ref_lm_greedy(ref_lm, gamma):
    wl, small = ref_lm
    target = wl.model
    for seed in (gamma, 100 + gamma):  # two prompts per gamma: six in all
        prompt = _prompt(wl, seed)
        ref = _greedy(target, prompt)
        for draft in (ModelDraft(small.model), SelfSpeculativeDraft(target, layers=1), PromptLookupDraft()):
            _check_exact(target, prompt, draft, gamma, ref)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_self_speculation_and_prompt_lookup_reproduce_tiny_llama_greedy(tiny, gamma):
    target = tiny.model
    for seed in (10 + gamma, 20 + gamma):
        prompt = torch.randint(0, target.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(seed))
        ref = _greedy(target, prompt)
        for draft in (SelfSpeculativeDraft(target, layers=1), PromptLookupDraft()):
            _check_exact(target, prompt, draft, gamma, ref)


def test_target_as_its_own_draft_accepts_everything(ref_lm):
    target = ref_lm[0].model
    prompt = _prompt(ref_lm[0], seed=7)
    gamma = 3
    out, stats, _ = speculative_greedy(target, prompt, N, ModelDraft(target), gamma)
    assert torch.equal(out, _greedy(target, prompt))
    # 11 tokens after the prefill's: rounds of k = min(3, left - 1) then all k + 1 emitted:
    # left 11 -> 4, 7 -> 4, 3 -> k=2, 3 emitted; ceil(11 / 4) = 3 rounds
    assert stats.rounds == math.ceil((N - 1) / (gamma + 1)) == 3
    assert stats.accepted_per_round == [3, 3, 2]
    assert stats.proposed == stats.accepted == 8
    assert stats.acceptance_rate == 1.0
    assert stats.mean_accepted_length == pytest.approx((8 + 3) / 3)  # gamma + 1 = 4 but for the shorter last round


def test_model_drafts_roll_their_cache_back_to_the_accepted_context(ref_lm):
    wl, small = ref_lm
    prompt = _prompt(wl, seed=5)[0].tolist()
    for make in (lambda: ModelDraft(small.model), lambda: SelfSpeculativeDraft(wl.model, layers=2)):
        draft = make()
        draft.reset(prompt)
        guess = draft.propose(prompt, 4)
        context = prompt + guess[:1] + [(guess[1] + 1) % 4096]  # one accepted, then the target disagreed
        draft.accept(context)
        assert draft.cache.get_seq_length() == len(draft.fed) == len(context) - 1
        fresh = make()
        fresh.reset(context)
        assert draft.propose(context, 3) == fresh.propose(context, 3)  # rolled back == rebuilt from scratch
    ref = _greedy(small.model, torch.tensor([context]), 3)[0].tolist()
    draft = ModelDraft(small.model)
    draft.reset(prompt), draft.propose(prompt, 4), draft.accept(context)
    assert draft.propose(context, 3) == ref  # and the model draft proposes its own greedy continuation


class _Stub:
    """A draft that knows the target's greedy sequence ``ref`` (prompt + output): it proposes the
    right tokens for the first ``right`` positions of each round, then ``wrong`` (or a token the
    sequence never contains) for the rest."""

    name = "stub"

    def __init__(self, ref: list[int], right: int, wrong: int) -> None:
        self.ref, self.right, self.wrong, self.calls = ref, right, wrong, []

    def reset(self, prompt_ids):
        pass

    def accept(self, context):
        assert context == self.ref[:len(context)]  # the loop only ever extends the greedy sequence

    def propose(self, context, k):
        self.calls.append(k)
        true = self.ref[len(context):len(context) + k]
        return true[:self.right] + [self.wrong] * (k - min(self.right, k))


@pytest.fixture(scope="module")
def tiny_case(tiny):
    prompt = torch.randint(0, 512, (1, 8), generator=torch.Generator().manual_seed(3))
    ref = _greedy(tiny.model, prompt)
    never = next(t for t in range(512) if t not in ref[0].tolist())
    return tiny.model, prompt, ref, prompt[0].tolist() + ref[0].tolist(), never


def test_a_draft_that_is_always_wrong_accepts_nothing(tiny_case):
    target, prompt, ref, seq, never = tiny_case
    gamma = 3
    stub = _Stub(seq, right=0, wrong=never)
    out, stats, _ = speculative_greedy(target, prompt, N, stub, gamma)
    assert torch.equal(out, ref)
    assert stats.acceptance_rate == 0.0 and stats.accepted == 0
    assert stats.rounds == N - 1  # one token per round after the prefill's
    assert stats.mean_accepted_length == 1.0
    # k = min(3, left - 1) for left = 11..1: 3 eight times, then 2, 1, 0
    assert stub.calls == [3] * 8 + [2, 1]  # the k = 0 round is a plain target step; the draft is not asked
    assert stats.proposed == 3 * 8 + 2 + 1


def test_a_draft_right_for_two_tokens_then_wrong(tiny_case):
    target, prompt, ref, seq, never = tiny_case
    gamma, right = 4, 2
    out, stats, _ = speculative_greedy(target, prompt, N, _Stub(seq, right, never), gamma)
    assert torch.equal(out, ref)
    # left 11: k=4, accept 2, emit 3 -> left 8: k=4, emit 3 -> left 5: k=4, emit 3 -> left 2: k=1, accept 1 (+ bonus)
    assert stats.accepted_per_round == [2, 2, 2, 1]
    assert (stats.rounds, stats.proposed, stats.accepted) == (4, 13, 7)
    assert stats.acceptance_rate == pytest.approx(7 / 13)
    assert stats.mean_accepted_length == pytest.approx(11 / 4)


def test_stamps_mark_each_token_and_a_round_shares_its_time(tiny_case):
    target, prompt, ref, seq, never = tiny_case
    stamps: list[float] = []
    out, stats, _ = speculative_greedy(target, prompt, N, _Stub(seq, 2, never), 4, stamps=stamps)
    assert torch.equal(out, ref) and len(stamps) == N and stamps == sorted(stamps)
    # the prefill's token, then rounds emitting accepted + 1 tokens at one time each: 3, 3, 3, 2
    assert [len(set(stamps[1 + sum(a + 1 for a in stats.accepted_per_round[:i]):][: a + 1]))
            for i, a in enumerate(stats.accepted_per_round)] == [1, 1, 1, 1]


def test_a_draft_with_nothing_to_say_is_plain_greedy(tiny_case):
    target, prompt, ref, seq, _ = tiny_case

    class Silent(_Stub):
        def propose(self, context, k):
            return []

    out, stats, _ = speculative_greedy(target, prompt, N, Silent(seq, 0, 0), 4)
    assert torch.equal(out, ref)
    assert (stats.rounds, stats.proposed, stats.accepted) == (N - 1, 0, 0)
    assert stats.acceptance_rate == 0.0 and stats.draft_tokens_ms_per_token == 0.0


def test_one_token_is_the_prefills_alone(tiny_case):
    target, prompt, ref, seq, _ = tiny_case
    out, stats, _ = speculative_greedy(target, prompt, 1, PromptLookupDraft(), 4)
    assert torch.equal(out, ref[:, :1])
    assert (stats.rounds, stats.proposed, stats.mean_accepted_length) == (0, 0, 0.0)


def test_stats_give_the_cost_ratio_inputs():
    s = SpecStats(proposed=8, accepted=6, rounds=4, target_ms=40.0, draft_ms=4.0, accepted_per_round=[2, 2, 1, 1])
    assert s.draft_tokens_ms_per_token == 0.5
    assert s.target_ms_per_round == 10.0
    assert s.cost_ratio == 0.05
    assert s.acceptance_rate == 0.75 and s.mean_accepted_length == 2.5


def test_analytical_speedup_matches_the_paper():
    # alpha 0.8, gamma 4: (1 - 0.8**5) / 0.2 = (1 - 0.32768) / 0.2 = 3.3616 tokens per round;
    # / (4 * 0.05 + 1 = 1.2) = 2.801333...
    assert expected_tokens_per_round(0.8, 4) == pytest.approx(3.3616)
    assert analytical_speedup(0.8, 4, 0.05) == pytest.approx(2.8013333333)
    # alpha 0.6, gamma 2, c 0.1: (1 - 0.216) / 0.4 = 1.96; / 1.2 = 1.633333...
    assert analytical_speedup(0.6, 2, 0.1) == pytest.approx(1.6333333333)
    assert analytical_speedup(1.0, 4, 0.05) == pytest.approx(5 / 1.2)  # the alpha -> 1 limit
    assert analytical_speedup(1.0, 4, 0.05) == pytest.approx(analytical_speedup(1 - 1e-9, 4, 0.05))
    assert expected_tokens_per_round(0.0, 5) == 1.0
    assert expected_tokens_per_round(1.0, 5) == 6.0
    assert analytical_speedup(0.0, 3, 0.5) == pytest.approx(1 / 2.5)  # a useless draft only costs


def test_prompt_lookup_proposes_what_followed_the_last_occurrence():
    d = PromptLookupDraft()
    assert d.propose([5, 6, 7, 8, 9, 5, 6, 7], 3) == [8, 9, 5]  # 3-gram (5, 6, 7) seen at the start
    assert d.propose([5, 6, 7, 8, 9, 5, 6, 7], 10) == [8, 9, 5, 6, 7]  # fewer than k: the context ends
    assert d.propose([1, 2, 3, 4, 9, 3], 2) == [4, 9]  # no 3- or 2-gram match; the 1-gram (3) does
    assert d.propose([1, 2, 1, 3, 1], 2) == [3, 1]  # the most recent occurrence, not the first
    assert d.propose([1, 2, 3], 4) == []  # nothing repeats
    assert d.propose([4], 4) == [] and d.propose([1, 1, 2], 0) == []
    assert PromptLookupDraft(ngram_max=2, ngram_min=2).propose([1, 2, 3, 4, 9, 3], 2) == []


def test_bad_input_says_what_to_fix(tiny):
    target = tiny.model
    prompt = torch.randint(0, 512, (1, 4))
    with pytest.raises(ValueError, match="gamma=0"):
        speculative_greedy(target, prompt, 4, PromptLookupDraft(), gamma=0)
    with pytest.raises(ValueError, match="n=0"):
        speculative_greedy(target, prompt, 0, PromptLookupDraft())
    for bad in (prompt[0], prompt.repeat(2, 1), prompt[:, :0]):
        with pytest.raises(ValueError, match=r"prompt has shape .*\(1, T\)"):
            speculative_greedy(target, bad, 4, PromptLookupDraft())
    with pytest.raises(ValueError, match=r"layers=2 must be in 1\.\.1"):
        SelfSpeculativeDraft(target, layers=2)  # tiny-llama has 2 decoder layers
    with pytest.raises(ValueError, match="Llama-style"):
        SelfSpeculativeDraft(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="ngram_min"):
        PromptLookupDraft(ngram_max=1, ngram_min=2)
    with pytest.raises(ValueError, match="alpha"):
        analytical_speedup(1.5, 4, 0.1)


def test_self_speculative_draft_shares_the_targets_weights(tiny):
    target = tiny.model
    draft = SelfSpeculativeDraft(target, layers=1)
    assert draft.model.layers[0] is target.model.layers[0] and len(draft.model.layers) == 1
    assert draft.model.embed_tokens is target.model.embed_tokens and draft.lm_head is target.lm_head
    assert len(target.model.layers) == 2 and target.config.num_hidden_layers == 2  # the target is untouched
