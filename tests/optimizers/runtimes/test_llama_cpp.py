"""The llama.cpp peer: skipped with a reason (and the install command) when the optional
llama-cpp-python is absent, never on workloads without a GGUF source; its measurement on the
shipped smollm2 GGUF where the extra is installed (its greedy loop against teacher-forced
logits, perplexity from its own logits); and the pipeline's handling of a runtime peer."""
import importlib.util

import pytest
import torch

from optimizers.runtimes import llama_cpp
from optimizers.quant.testing import tiny_lm_workload
from optimizers.workloads.base import LMEval, Workload


def _gguf():
    from optimizers.workloads.smollm2 import gguf_path

    return gguf_path()


def _gguf_workload(**eval_kw) -> Workload:
    """A workload carrying only what the peer reads: the GGUF path, evaluation tokens, the
    parameter count. No PyTorch model is converted: the tokens are Python source tokenized by
    llama.cpp itself where it is installed, else seeded ids inside SmolLM2's vocabulary."""
    ids = torch.randint(0, 49152, (512,), generator=torch.Generator().manual_seed(0))
    if importlib.util.find_spec("llama_cpp") is not None:
        import json
        import inspect

        from llama_cpp import Llama

        llm = Llama(model_path=str(_gguf()), n_ctx=64, vocab_only=True, verbose=False)
        ids = torch.tensor(llm.tokenize(inspect.getsource(json.decoder).encode(), add_bos=False)[:512])
        llm.close()
    ev = LMEval(token_ids=ids, **({"window": 32, "stride": 32, "max_windows": 2, "prompt_len": 8, "decode_tokens": 4} | eval_kw))
    return Workload(name="smollm2-135m", task="causal_lm", model=torch.nn.Linear(1, 1), eval=ev,
                    meta={"gguf": str(_gguf()), "param_count": 134_515_008})


def test_no_gguf_source_means_no_peer_and_no_note():
    notes = []
    assert llama_cpp.peers_for(tiny_lm_workload(), "int4", notes) == {} and notes == []


def test_missing_extra_is_a_note_naming_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    notes = []
    assert llama_cpp.peers_for(_gguf_workload(), "int4", notes) == {}
    assert len(notes) == 1 and "llama.cpp peer skipped" in notes[0] and "pip install" in notes[0]


def test_the_shipped_file_is_q4_1():
    assert llama_cpp.source_format(_gguf()) == "Q4_1"


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="format 'Q3_X' is not offered"):
        llama_cpp.quantized(_gguf(), "Q3_X", tmp_path)


needs_extra = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="llama-cpp-python (the optional bench extra) is not installed")


@needs_extra
@pytest.mark.parametrize("logits_all", [False, True])
def test_greedy_loop_matches_teacher_forced_argmax(logits_all):
    """Before: the loop read ``Llama.scores``, which only logits_all=True fills; the timed context
    (logits_all=False) decoded garbage, and its answers scored 0."""
    peer = llama_cpp.LlamaCppPeer(_gguf(), "Q4_1")
    prompt = _gguf_workload().eval.token_ids[:8].tolist()
    llm = peer._open(64, logits_all=logits_all)
    try:
        toks, ms = llama_cpp._greedy(llm, prompt, 6)
    finally:
        llm.close()
    llm = peer._open(64, logits_all=True)
    try:
        llm.eval(prompt + toks)
        forced = [int(llm.scores[i].argmax()) for i in range(len(prompt) - 1, len(prompt) + len(toks) - 1)]
    finally:
        llm.close()
    assert toks == forced and ms > 0 and len(set(toks)) > 1


@needs_extra
def test_peer_metrics_on_the_shipped_gguf():
    from optimizers.measure import SpeedSettings

    wl = _gguf_workload()
    m = llama_cpp.LlamaCppPeer(_gguf(), "Q4_1").metrics(wl, None, SpeedSettings(warmup=0, repeats=2, min_time_s=0))
    assert 1.0 < m["perplexity"] < 100  # Python source in 32-token windows: observed 38 (random ids: 2.5 M)
    assert m["decode_tokens_per_s"] > 0 and m["prefill_tokens_per_s"] > 0
    assert m["stored_bytes"] == _gguf().stat().st_size and 0.25 < m["stored_bytes_vs_16bit"] < 0.5
    assert m["threads"] == torch.get_num_threads()


def test_pipeline_records_a_runtime_peer_and_keeps_going_when_one_fails(migrated_sqlite, monkeypatch):
    """A runtime peer measures itself with the run's baseline; one that raises is a note on the
    step, and the step still succeeds."""
    from db import queries
    from db.session import session_scope
    from jobs import pipeline, submit
    from optimizers.techniques import int4_weight_only

    seen = {}

    class Peer:
        def __init__(self, fail):
            self.fail = fail

        def metrics(self, workload, reference, settings):
            if self.fail:
                raise RuntimeError("runtime crashed")
            seen["reference"] = reference
            return {"perplexity": reference.metrics["perplexity"] * 1.5, "decode_tokens_per_s": 1.0}

    real = int4_weight_only.Int4WeightOnly.apply

    def with_peers(self, workload, config):
        rec = real(self, workload, config)
        rec.peers = {"rt:ok": Peer(False), "rt:bad": Peer(True)}
        return rec

    monkeypatch.setattr(int4_weight_only.Int4WeightOnly, "apply", with_peers)
    pb = submit.validate_request({"name": "p", "title": "p", "steps": [
        {"technique": "int4_weight_only", "params": {"group_size": 32}}]}, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    assert pipeline.execute_run(run_id, worker="test") == "succeeded"
    with session_scope() as s:
        summary = queries.run_summary(queries.get_run(s, run_id))
    step = summary["steps"][0]
    assert step["status"] == "succeeded"
    assert step["peers"]["rt:ok"]["perplexity"] == pytest.approx(1.5 * summary["baseline"]["perplexity"])
    assert "rt:bad" not in step["peers"]
    assert any("rt:bad could not be measured" in n and "runtime crashed" in n for n in step["notes"]), step["notes"]
    assert seen["reference"].outputs is not None
