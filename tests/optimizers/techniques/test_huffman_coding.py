"""huffman_coding (Deep Compression stage 3): lossless (outputs identical to the shared model's),
stored bytes drop by what the bitstream saves, the decoded cache is not stored, the figures the
paper's table quotes (bits per weight before and after, compression against fp32 and a 16-bit
copy) are reported, and a model with no shared layer is refused with what to run first."""
from __future__ import annotations

import pytest
import torch

from optimizers import registry
from optimizers import sparsity as S
from optimizers.measure import stored_bytes
from optimizers.quant import coded as C
from optimizers.quant.testing import check_config_roundtrip, tiny_cnn_workload, tiny_lm_workload

T = registry.get("huffman_coding")


def _shared(wl, **params):
    ws = registry.get("weight_sharing")
    return ws.apply(wl, ws.config(params)).workload


def test_config():
    check_config_roundtrip(T, {"block_size": 256})
    with pytest.raises(ValueError, match="block_size"):
        T.config({"block_size": 8})
    assert T.lossless  # from its catalog entry


def test_pruned_shared_lm_is_coded_losslessly_and_stores_less():
    wl = tiny_lm_workload()
    S.magnitude_prune(S.prunable_linears(wl.model), 0.7)
    shared = _shared(wl, bits=5)
    rec = T.apply(shared, T.config())
    out = rec.workload.model
    assert all(isinstance(m, C.HuffmanCodedWeight) for m in C.coded_modules(out))
    batch = wl.calibration[0]
    with torch.inference_mode():
        assert torch.equal(out(batch).logits, shared.model(batch).logits)  # lossless
    d = rec.diagnostics
    saved = stored_bytes(shared.model) - stored_bytes(out)
    assert saved == pytest.approx((d["bits_per_weight_before"] - d["bits_per_weight"]) * d["coded_weights"] / 8)
    # 70 % zeros: entropy ≈ 0.88 + 0.3·5 bits, Huffman within a bit of it (observed 5.04 → 2.22, entropy 2.01)
    assert d["entropy_bits_per_weight"] <= d["bits_per_weight"] < d["entropy_bits_per_weight"] + 1
    assert d["bits_per_weight"] < 0.5 * d["bits_per_weight_before"]
    assert d["compression_vs_16bit"] == pytest.approx(d["compression_vs_fp32"] / 2)
    assert any("runtime needs the decode" in n for n in rec.notes)
    assert all(m.decoded is not None and "decoded" not in m.state_dict() for m in C.coded_modules(out))


def test_ternary_cnn_codes_are_coded_too_and_outputs_match():
    wl = tiny_cnn_workload()
    tw = registry.get("ternary_weights")
    tern = tw.apply(wl, tw.config({"include_first_last": True})).workload
    rec = T.apply(tern, T.config({"block_size": 64}))
    with torch.no_grad():
        assert torch.equal(rec.workload.model(wl.eval.images), tern.model(wl.eval.images))
    assert stored_bytes(rec.workload.model) <= stored_bytes(tern.model)
    kept = int(rec.diagnostics["layers_kept_packed"])  # layers Huffman would not shrink stay 2-bit packed
    assert kept == sum(type(m) is C.CodedWeight for m in rec.workload.model.modules())


def test_a_model_without_shared_layers_is_refused():
    with pytest.raises(ValueError, match="run weight_sharing first"):
        T.apply(tiny_lm_workload(), T.config())
