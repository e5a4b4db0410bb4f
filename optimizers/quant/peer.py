"""torchao's own implementations of int8 weight-only and int8 dynamic (W8A8), applied to the
same model so a run can show ours next to a peer's (error and speed). torchao is imported
lazily (6 s cold import); its int4 configs need CUDA here (FACTS.md), so only int8 is offered."""
from __future__ import annotations

from optimizers.quant.modules import copy_model, default_predicate

PEERS = ("int8_weight_only", "int8_dynamic")


def torchao_peer(workload, kind: str, include_lm_head: bool = False):
    """A copy of ``workload`` quantized by ``torchao.quantization.quantize_`` (``kind`` one of PEERS)."""
    if kind not in PEERS:
        raise ValueError(f"kind={kind!r} has no torchao peer here; choose one of {list(PEERS)}")
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_
    except ImportError as err:
        raise RuntimeError(f"torchao is not importable ({err}); install torchao to run the peer comparison") from err
    model = copy_model(workload.model)
    pred = default_predicate(model, include_lm_head)
    names = {n for n, m in model.named_modules() if pred(n, m)}
    cfg = Int8WeightOnlyConfig() if kind == "int8_weight_only" else Int8DynamicActivationInt8WeightConfig()
    quantize_(model, cfg, filter_fn=lambda m, fqn: fqn in names)
    return workload.with_model(model, peer=f"torchao:{kind}")
