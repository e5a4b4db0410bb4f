import json

import pytest

from optimizers.workloads import load_workload
from optimizers.workloads.base import WorkloadError
from optimizers.workloads.hf import load_hf


def test_missing_path_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEEDBOOK_MODEL_ROOTS", str(tmp_path))
    with pytest.raises(WorkloadError, match="no model directory"):
        load_workload(str(tmp_path / "nope"))
    with pytest.raises(WorkloadError, match="outside the allowed model folders"):  # relative to cwd, not a root
        load_workload("./definitely/not/here")


def test_pickle_only_directory_is_refused_naming_safetensors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(WorkloadError, match="safetensors only") as e:
        load_hf(str(tmp_path))
    assert "pytorch_model.bin" in str(e.value)


def test_hub_id_while_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WorkloadError, match="offline"):
        load_workload("speedbook-test/no-such-model")


def test_unknown_architecture_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "speedbook-unknown-arch"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(WorkloadError, match="architecture"):
        load_hf(str(tmp_path))


def test_custom_code_is_refused_without_trust_remote_code(tmp_path):
    cfg = {"model_type": "llama", "auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(WorkloadError, match="trust_remote_code"):
        load_hf(str(tmp_path))


def test_local_directories_load_with_the_task_inferred():
    from optimizers.workloads.minilm import model_dir
    from optimizers.workloads.ref_lm import ASSETS

    lm = load_hf(str(ASSETS / "ref-lm-draft"))
    assert lm.task == "causal_lm" and lm.eval.token_ids.numel() > 0 and lm.calibration[0].shape == (1, 256)
    enc = load_hf(str(model_dir()))
    assert enc.task == "encoder" and len(enc.eval.pairs) >= 30
