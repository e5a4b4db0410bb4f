"""sdpa / flash_attention / cuda_graphs: the attention backend and graph capture as steps. sdpa and eager give the same logits
up to float error and leave the input model alone; flash_attention says on a CPU that it needs a
GPU, and on a GPU without the flash-attn package how to install it."""
import pytest
import torch

from optimizers import registry
from optimizers.base import Target
from optimizers.workloads import load_workload

SDPA, FA = registry.get("sdpa"), registry.get("flash_attention")


def test_eager_and_sdpa_agree_and_the_baseline_model_is_untouched():
    wl = load_workload("tiny-llama")
    ids = wl.eval.token_ids[:48][None]
    eager = SDPA.apply(wl, SDPA.config({"backend": "eager"}))
    assert eager.workload.model.config._attn_implementation == "eager"
    assert wl.model.config._attn_implementation == "sdpa"  # a copy was switched, not the baseline's model
    assert "sdpa → eager" in eager.notes[0]
    with torch.inference_mode():
        a, b = wl.model(input_ids=ids).logits, eager.workload.model(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_flash_attention_verdicts():
    assert FA.check(Target(device="cpu", task="causal_lm")).status == "needs_gpu"
    v = FA.check(Target(device="cuda", capability=(7, 5), task="causal_lm"))
    assert v.status == "needs_gpu" and "8.0" in v.reason
    import importlib.util

    if importlib.util.find_spec("flash_attn") is None:
        v = FA.check(Target(device="cuda", capability=(9, 0), task="causal_lm"))
        assert v.status == "refused" and "pip install flash-attn" in v.reason
    with pytest.raises(ValueError, match="on a CPU use sdpa"):
        FA.apply(load_workload("tiny-llama"), FA.config())


def test_cuda_graphs_needs_a_gpu_and_says_what_runs_here():
    cg = registry.get("cuda_graphs")
    assert cg.check(Target(device="cpu", task="causal_lm")).status == "needs_gpu"
    with pytest.raises(ValueError, match="on a CPU use torch_compile"):
        cg.apply(load_workload("tiny-llama"), cg.config())
