"""Adapters through peft (the field's library): LoRA (Hu et al. 2021, arXiv:2106.09685), DoRA
(Liu et al. 2024, arXiv:2402.09353: magnitude and direction, ``use_dora``) and QLoRA (Dettmers
et al. 2023, arXiv:2305.14314: LoRA on a frozen NF4 base — here the project's NF4 layers, which
peft wraps through its custom-module hook). ``merge`` folds the trained adapters back, so the
inference scenario measures an ordinary model: plain Linear weights W + (α/r)·B·A, and for an NF4
base the merged weight re-quantized to NF4 (the storage QLoRA deploys; the re-quantization error
is part of the measured quality)."""
from __future__ import annotations

import torch
from torch import nn

from optimizers.quant.nf4 import QuantLinearNF4
from optimizers.training.recipe import Adapter


def present_targets(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """The adapter's target names that name layers of this model (a Linear or an NF4 layer)."""
    kinds = (nn.Linear, QuantLinearNF4)
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, kinds)}
    found = [t for t in targets if t in names]
    if not found:
        raise ValueError(f"targets={list(targets)} name no Linear layer of this model; its layers are "
                         f"{sorted(names)[:12]}")
    return found


def _quantize_targets(model: nn.Module, targets: list[str]) -> int:
    """QLoRA's base: every targeted Linear not yet NF4 becomes NF4 (block 64, double quantization)."""
    from optimizers.quant.modules import replace_linears

    return len(replace_linears(model, lambda n, m: type(m) is nn.Linear and n.rsplit(".", 1)[-1] in targets,
                               lambda n, lin: QuantLinearNF4.from_linear(lin)))


def attach(model: nn.Module, adapter: Adapter) -> nn.Module:
    """``model`` (modified in place) wrapped by peft with ``adapter``; only the adapters train."""
    import warnings

    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.layer import Linear as LoraLinear

    targets = present_targets(model, adapter.targets)
    if adapter.kind == "qlora":
        _quantize_targets(model, targets)
    nf4_targets = any(isinstance(m, QuantLinearNF4) and n.rsplit(".", 1)[-1] in targets
                      for n, m in model.named_modules())
    if adapter.kind == "dora" and nf4_targets:
        raise ValueError("DoRA needs the base weight's column norms, and these layers are NF4 (an earlier nf4 step): "
                         "use lora or qlora on an NF4 base, or put dora before any quantizer")
    cfg = LoraConfig(r=adapter.rank, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout,
                     target_modules=targets, use_dora=adapter.kind == "dora")
    cfg._register_custom_module({QuantLinearNF4: LoraLinear})  # peft's hook for a layer type it does not know
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unsupported layer type")
        return get_peft_model(model, cfg)


@torch.no_grad()
def merge(model: nn.Module) -> nn.Module:
    """The trained model with its adapters folded in (peft's ``merge_and_unload``; an NF4 base
    re-quantized with the adapter's delta added); a model without adapters is returned as is."""
    from peft import PeftModel
    from peft.tuners.lora.layer import LoraLayer

    from optimizers.quant.modules import set_module

    if not isinstance(model, PeftModel):
        return model
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer) and isinstance(module.base_layer, QuantLinearNF4):
            base = module.base_layer
            w = base.dequantized_weight()
            for active in module.active_adapters:
                w = w + module.get_delta_weight(active).to(w.dtype)
            lin = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
            lin.weight.copy_(w)
            if base.bias is not None:
                lin.bias.copy_(base.bias)
            set_module(model, name, QuantLinearNF4.from_linear(
                lin, block_size=base.block_size, double_quant=base.double_quant, dq_block_size=base.dq_block_size))
    return model.merge_and_unload()
