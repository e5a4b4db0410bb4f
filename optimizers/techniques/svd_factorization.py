"""Low-rank SVD factorization: replace each selected Linear W (out×in) by two Linears from its
truncated SVD, at a fixed ``rank`` or the smallest rank holding an ``energy`` fraction of Σσ²,
skipping layers where r·(out+in) ≥ out·in (Denton et al. 2014; SVD-LLM 2024 for LLMs).
No fine-tuning here: the quality cost is measured as is."""
from __future__ import annotations

import copy
import fnmatch

import torch
from pydantic import Field, model_validator

from optimizers import lowrank as L
from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.quant.modules import set_module
from optimizers.registry import register
from optimizers.workloads.base import Workload


class SvdFactorizationConfig(TechniqueConfig):
    rank: int | None = Field(None, ge=1, description="fixed rank for every layer (capped at min(out, in)); set rank or energy")
    energy: float | None = Field(0.9, gt=0.0, le=1.0, description="keep the smallest rank holding this fraction of Σσ² per layer")
    include: list[str] = Field(["*"], description="fnmatch patterns of module names to factorize, e.g. ['*.mlp.*']")
    include_lm_head: bool = Field(False, description="also factorize the output projection (lm_head)")

    @model_validator(mode="after")
    def _one_rule(self) -> "SvdFactorizationConfig":
        if (self.rank is None) == (self.energy is None):
            raise ValueError("set exactly one of rank or energy (e.g. {'rank': 32, 'energy': null})")
        return self


@register
class SvdFactorization(Technique):
    name = "svd_factorization"
    needs_linear = True
    summary = "replace Linears by two thin Linears from a truncated SVD (fixed rank or energy fraction)"
    Config = SvdFactorizationConfig

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.runnable and not target.has_linear:
            return Verdict("refused", "svd_factorization factorizes nn.Linear layers and this model has none")
        return verdict

    def apply(self, workload: Workload, config: SvdFactorizationConfig) -> StepRecord:
        model = copy.deepcopy(workload.model).eval()
        chosen = [(n, m) for n, m in model.named_modules() if type(m) is torch.nn.Linear
                  and (config.include_lm_head or not n.endswith("lm_head"))
                  and any(fnmatch.fnmatch(n, p) for p in config.include)]
        if not chosen:
            raise ValueError(f"svd_factorization found no nn.Linear matching {config.include}; module names look like "
                             f"{[n for n, m in model.named_modules() if type(m) is torch.nn.Linear][:3]}")
        done, skipped, before, after = [], [], 0, 0
        for name, lin in chosen:
            out_f, in_f = lin.weight.shape
            if config.rank is not None:
                r = min(config.rank, out_f, in_f)
            else:
                r = L.rank_for_energy(torch.linalg.svdvals(lin.weight.detach().double()), config.energy)
            if not L.saves_params(out_f, in_f, r):
                skipped.append(name)
                continue
            set_module(model, name, L.factorize_linear(lin, r))
            done.append(f"{name}:{r}")
            before, after = before + out_f * in_f, after + L.factored_params(out_f, in_f, r)
        notes = [f"factorized {len(done)} Linear layers ({', '.join(done[:6])}{' …' if len(done) > 6 else ''}); "
                 f"their weights {before:,} → {after:,} params" if done else "no layer factorized",
                 f"skipped {len(skipped)} where r·(out+in) ≥ out·in (no saving)" if skipped else "no layer skipped"]
        return StepRecord(workload.with_model(model), notes=notes)
