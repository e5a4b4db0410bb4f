"""The measurement harness: true stored bytes, peak memory from torch's accounting,
fidelity against the baseline, and the protocol on the tiny Llama."""
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
