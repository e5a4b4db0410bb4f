"""Low-rank SVD factorization: replace each selected Linear W (out×in) by two Linears from its
truncated SVD, at a fixed ``rank``, the smallest rank holding an ``energy`` fraction of Σσ², or
the smallest rank whose relative error ‖W − W_r‖_F / ‖W‖_F is at most ``max_error`` (read off the
dropped singular values, Eckart–Young: no trial factorization), skipping layers where
r·(out+in) ≥ out·in (Denton et al. 2014; SVD-LLM 2024 for LLMs). No fine-tuning here: the quality
cost is measured as is.

Sample playbook step::

    - technique: svd_factorization
      params: {max_error: 0.3, energy: null, include: ["*.mlp.*"]}
"""
from __future__ import annotations

import copy
import fnmatch

import torch
from pydantic import Field, model_validator

from optimizers import lowrank as L
from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict, layer_error_figures
from optimizers.quant.modules import set_module
from optimizers.registry import register
from optimizers.workloads.base import Workload


class SvdFactorizationConfig(TechniqueConfig):
    rank: int | None = Field(None, ge=1, description="fixed rank for every layer (capped at min(out, in)); set one "
                                                     "of rank, energy, max_error")
    energy: float | None = Field(0.9, gt=0.0, le=1.0, description="keep the smallest rank holding this fraction of Σσ² per layer")
    max_error: float | None = Field(None, gt=0.0, lt=1.0, description="keep the smallest rank per layer with "
                                                                      "‖W − W_r‖_F / ‖W‖_F ≤ this (Eckart–Young)")
    include: list[str] = Field(["*"], description="fnmatch patterns of module names to factorize, e.g. ['*.mlp.*']")
    include_lm_head: bool = Field(False, description="also factorize the output projection (lm_head)")

    @model_validator(mode="after")
    def _one_rule(self) -> "SvdFactorizationConfig":
        if sum(v is not None for v in (self.rank, self.energy, self.max_error)) != 1:
            raise ValueError("set exactly one of rank, energy or max_error (e.g. {'rank': 32, 'energy': null} or "
                             "{'max_error': 0.3, 'energy': null})")
        return self


@register
class SvdFactorization(Technique):
    name = "svd_factorization"
    needs_linear = True
    summary = "replace Linears by two thin Linears from a truncated SVD (fixed rank, energy fraction or error bound)"
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
        done, skipped, before, after, layers = [], [], 0, 0, {}
        for name, lin in chosen:
            out_f, in_f = lin.weight.shape
            s = torch.linalg.svdvals(lin.weight.detach().double())
            r = chosen_rank(config, s, out_f, in_f)
            layers[name] = {"rank": r, "rel_error": L.tail_error(s, r), "saves": L.saves_params(out_f, in_f, r)}
            if not L.saves_params(out_f, in_f, r):
                skipped.append(name)
                continue
            set_module(model, name, L.factorize_linear(lin, r))
            done.append(f"{name}:{r}")
            before, after = before + out_f * in_f, after + L.factored_params(out_f, in_f, r)
        notes = [f"factorized {len(done)} Linear layers ({', '.join(done[:6])}{' …' if len(done) > 6 else ''}); "
                 f"their weights {before:,} → {after:,} params" if done else "no layer factorized",
                 f"skipped {len(skipped)} where r·(out+in) ≥ out·in (no saving)" if skipped else "no layer skipped"]
        if config.max_error is not None:
            notes.append(f"each rank the smallest with ‖W − W_r‖_F / ‖W‖_F ≤ {config.max_error:g}; worst layer "
                         f"{max(v['rel_error'] for v in layers.values()):.3f} (per-layer ranks and errors in details)")
        diagnostics = layer_error_figures("svd_rel_error", {n: v["rel_error"] for n, v in layers.items() if v["saves"]})
        return StepRecord(workload.with_model(model), notes=notes, diagnostics=diagnostics, details={"layers": layers})


def chosen_rank(config: SvdFactorizationConfig, s: torch.Tensor, out_f: int, in_f: int) -> int:
    """The layer's rank under the config's one rule, from its singular values ``s``."""
    if config.rank is not None:
        return min(config.rank, out_f, in_f)
    if config.energy is not None:
        return L.rank_for_energy(s, config.energy)
    return L.rank_for_error(s, config.max_error)
