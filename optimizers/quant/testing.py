"""Fixtures and contract checks shared by the quantization tests (like torchao.testing):
tiny models built from configs in code, one with deliberate activation-outlier channels,
and the checks every quantization technique must pass."""
from __future__ import annotations

import json

import torch
from torch import nn

from optimizers.base import Target
from optimizers.measure import stored_bytes
from optimizers.quant.modules import QuantLinearBase
from quant.errors import rel_error
from optimizers.workloads.base import VisionEval, Workload


def tiny_lm_workload(n_calib: int = 2, seed: int = 0, outliers: bool = False, **overrides) -> Workload:
    """tiny-llama (hidden 128, 2 layers, intermediate 352 → group sizes 32 / 16) with
    ``n_calib`` calibration batches of 64 tokens. ``outliers``: a few hidden channels of
    the RMSNorm weights scaled ×40, giving activation outliers like large LMs' (SmoothQuant §3)."""
    from optimizers.workloads import tiny_llama

    wl = tiny_llama.load()
    model = tiny_llama.build_tiny_llama(seed=seed, **overrides)
    if outliers:
        with torch.no_grad():
            for layer in model.model.layers:
                for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                    norm.weight[[3, 17, 64, 101]] *= 40.0
    calib = [b[:, :64] for b in wl.calibration[:n_calib]]  # (1, 64) token ids each
    return Workload(name=wl.name, task=wl.task, model=model, eval=wl.eval, calibration=calib, device="cpu",
                    meta=dict(wl.meta))


class _NoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def no_linear_workload() -> Workload:
    x = torch.randn(4, 1, 8, 8)
    return Workload(name="conv-only", task="vision", model=_NoLinear().eval(),
                    eval=VisionEval(images=x, labels=torch.zeros(4, dtype=torch.long)), calibration=[x])


def logits(wl: Workload, batch=None) -> torch.Tensor:
    batch = wl.calibration[0] if batch is None else batch
    with torch.no_grad():
        return wl.model(batch).logits


rel_err = rel_error  # the one relative error (quant.errors), reference first


def check_config_roundtrip(technique, params: dict) -> None:
    """Config → JSON → Config is the identity; unknown keys are rejected."""
    import pydantic

    cfg = technique.config(params)
    again = technique.Config.model_validate_json(cfg.model_dump_json())
    assert again == cfg
    assert technique.Config(**json.loads(cfg.model_dump_json())) == cfg
    try:
        technique.config({**params, "no_such_field": 1})
    except pydantic.ValidationError as e:
        assert "no_such_field" in str(e)
    else:
        raise AssertionError("unknown config key accepted")
    schema = technique.Config.model_json_schema()
    for field, spec in schema["properties"].items():
        assert spec.get("description"), f"{technique.name}.{field} has no description"


def check_swapped(wl_in: Workload, wl_out: Workload, qtype: type[QuantLinearBase]) -> list[str]:
    """Every Linear but the LM head is now ``qtype``; the input workload's model is untouched."""
    assert wl_out.model is not wl_in.model
    assert any(isinstance(m, nn.Linear) and not isinstance(m, QuantLinearBase) for m in wl_in.model.modules())
    names = [n for n, m in wl_out.model.named_modules() if isinstance(m, qtype)]
    remaining = [n for n, m in wl_out.model.named_modules() if type(m) is nn.Linear]
    assert remaining == ["lm_head"], remaining
    assert len(names) == len([n for n, m in wl_in.model.named_modules() if type(m) is nn.Linear]) - 1
    for _, m in wl_out.model.named_modules():  # no float weight copy left in quantized modules
        if isinstance(m, QuantLinearBase):
            assert not any(p.is_floating_point() and p.dim() == 2 and p.shape == (m.out_features, m.in_features)
                           for p in list(m.parameters()) + list(m.buffers()) if p.dtype in (torch.float32, torch.bfloat16))
    return names


def linear_weight_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes of the quantized modules, their fp16 weight bytes)."""
    q = f16 = 0
    for m in model.modules():
        if isinstance(m, QuantLinearBase):
            q += stored_bytes(m) - (m.bias.numel() * m.bias.element_size() if m.bias is not None else 0)
            f16 += m.in_features * m.out_features * 2
    return q, f16


def cpu_target(**kw) -> Target:
    return Target(device="cpu", task=kw.pop("task", "causal_lm"), **kw)


def check_verdicts(technique, config=None) -> None:
    """Runs on a CPU LM; refused without Linear layers if it works on them (runs otherwise);
    refused without calibration if it needs it."""
    assert technique.check(cpu_target(), config).status == "runs"
    v = technique.check(cpu_target(has_linear=False), config)
    if technique.needs_linear:
        assert v.status == "refused" and "Linear" in v.reason
    else:
        assert v.status == "runs"
    v = technique.check(cpu_target(has_calibration=False), config)
    if technique.needs_calibration:
        assert v.status == "refused" and "calibration" in v.reason
    else:
        assert v.status == "runs"


def check_bad_inputs(technique, params: dict) -> None:
    """No-Linear model and (if needed) missing calibration raise ValueErrors that say what to do."""
    import pytest

    cfg = technique.config(params)
    with pytest.raises(ValueError, match=r"no nn\.Linear|nn\.Linear layers and this model has none"):
        technique.apply(no_linear_workload(), cfg)
    if technique.needs_calibration:
        wl = tiny_lm_workload()
        with pytest.raises(ValueError, match=f"{technique.name} needs calibration data"):
            technique.apply(wl.with_model(wl.model).__class__(**{**wl.__dict__, "calibration": []}), cfg)


def tiny_cnn_workload(seed: int = 0, n: int = 64) -> Workload:
    """A small untrained digits-cnn (widths 8–16: convs, depthwise convs, a Linear classifier) on
    random 8×8 images, with a training split of the same images (for the techniques that train)."""
    from optimizers.workloads.base import VisionTrain
    from optimizers.workloads.digits_cnn import DigitsCNN

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
    return Workload(name="tiny-cnn", task="vision", model=DigitsCNN(widths=(8, 16, 16, 16)).eval(),
                    eval=VisionEval(images=x, labels=y, batch_size=32), calibration=[x[:16]],
                    train=lambda: VisionTrain(x, y))
