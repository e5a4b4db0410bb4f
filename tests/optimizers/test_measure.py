"""The measurement harness: true stored bytes, peak memory from torch's accounting,
fidelity against the baseline, and the protocol on the tiny Llama."""
import pytest
import torch

from optimizers.measure import SpeedSettings, measure, peak_memory_bytes, stored_bytes
from optimizers.workloads import load_workload

FAST = SpeedSettings(warmup=1, repeats=3)


def test_stored_bytes_counts_each_tensor_once():
    lin = torch.nn.Linear(64, 32)  # 64*32*4 + 32*4 = 8320
    assert stored_bytes(lin) == 8320
    tied = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 10, bias=False))
    tied[1].weight = tied[0].weight
    assert stored_bytes(tied) == 10 * 8 * 4


def test_stored_bytes_of_packed_int8():
    model = torch.nn.Sequential(torch.nn.Linear(64, 32))
    q = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    # int8 weight 2048 B + fp32 bias 128 B + the weight's scale and zero point (8 + 8 B)
    # + the module's (unused) output scale fp32 and zero point int64 (4 + 8 B)
    assert stored_bytes(q) == 2048 + 128 + 16 + 12


def test_peak_memory_counts_weights_and_activations():
    lin = torch.nn.Linear(256, 256)
    x = torch.randn(64, 256)
    with torch.inference_mode():
        peak = peak_memory_bytes(lin, lambda: lin(x), "cpu")
    weights = stored_bytes(lin)
    assert weights + 64 * 256 * 4 <= peak <= weights + 4 * 64 * 256 * 4  # output at least, a few temporaries at most


def test_measure_tiny_llama_reports_the_protocol():
    wl = load_workload("tiny-llama")
    base = measure(wl, settings=FAST)
    m = base.metrics
    for name in ("stored_bytes", "perplexity", "latency_ms", "prefill_tokens_per_s", "decode_tokens_per_s", "peak_memory_bytes"):
        assert m[name] > 0, name
    assert "kl_divergence" not in m  # fidelity needs a reference
    again = measure(wl, reference=base, settings=FAST)
    assert again.metrics["kl_divergence"] < 1e-9
    assert again.metrics["top1_agreement"] == 1.0
    assert again.metrics["perplexity"] == base.metrics["perplexity"]
    assert base.environment["device"] == "cpu" and base.environment["torch"].startswith("2.13")


def test_stored_bytes_of_torchao_tensor_subclass():
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    m = torch.nn.Sequential(torch.nn.Linear(256, 128, bias=False))
    quantize_(m, Int8WeightOnlyConfig())
    n = stored_bytes(m)
    assert 256 * 128 <= n <= 256 * 128 + 128 * 8  # int8 weights plus per-row scales; observed 33,408


def test_the_decode_loop_yields_generates_greedy_tokens():
    """The lean static-cache loop times what generate() would produce, token for token."""
    from optimizers.measure import greedy_decode

    wl = load_workload("tiny-llama")
    prompt = wl.eval.token_ids[:16].reshape(1, 16)
    with torch.inference_mode():
        ref = wl.model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=20,
                                min_new_tokens=20)[:, 16:]
        tokens, ms = greedy_decode(wl.model, prompt, 20)
    assert torch.equal(tokens, ref) and ms > 0


def test_decode_bandwidth_is_bytes_times_tokens_against_the_copy_ceiling():
    from optimizers.measure import copy_gb_per_s, decode_bandwidth

    out = decode_bandwidth(2e9, 10.0, "cpu")
    assert out["decode_bandwidth_gb_per_s"] == pytest.approx(20.0)
    assert out["copy_gb_per_s"] == copy_gb_per_s("cpu") > 0
    assert out["decode_bandwidth_fraction"] == pytest.approx(20.0 / out["copy_gb_per_s"])


def test_pin_threads_fixes_one_count_for_the_run(monkeypatch):
    import torch

    from optimizers.measure import environment, pin_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("SPEEDBOOK_THREADS", "1")
        assert pin_threads() == 1 and torch.get_num_threads() == 1
        assert environment("cpu")["threads_from"] == "SPEEDBOOK_THREADS"
        monkeypatch.setenv("SPEEDBOOK_THREADS", "two")
        with pytest.raises(ValueError, match="SPEEDBOOK_THREADS"):
            pin_threads()
    finally:
        torch.set_num_threads(before)
