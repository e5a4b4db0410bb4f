"""Export step: write the current (quantized) LM as a compressed-tensors checkpoint — the
format vLLM loads — reload it with that package and check the weights round-trip exactly.
The model is unchanged, so the step records its own figures instead of a re-measurement."""
from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.workloads.base import Workload


class ExportCompressedTensorsConfig(TechniqueConfig):
    folder: str = Field("compressed-tensors", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                        description="sub-folder of the run's artifact folder (a name, never a path: files stay in the run's folder)")
    verify: bool = Field(True, description="reload the checkpoint with compressed-tensors and check every weight round-trips")


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@register
class ExportCompressedTensors(Technique):
    name = "export_compressed_tensors"
    summary = "save a quantized LM in the compressed-tensors format (loadable by vLLM), verified by reloading"
    Config = ExportCompressedTensorsConfig
    tasks = frozenset({"causal_lm"})

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.runnable and not target.quantized:
            return Verdict("refused", "export_compressed_tensors writes quantized Linear layers and this model has "
                                      "none yet: put a weight quantizer (int4_weight_only, gptq, awq, int8_weight_only) "
                                      "before it", blame="config")
        return verdict

    def apply(self, workload: Workload, config: ExportCompressedTensorsConfig) -> StepRecord:
        from optimizers.export import check_round_trip, export_compressed_tensors, reload

        base = Path(workload.meta.get("artifact_dir") or tempfile.mkdtemp(prefix="speedbook-export-"))
        out = base / config.folder
        path = export_compressed_tensors(workload.model, out, workload.tokenizer)
        figures = {"export_bytes": float(_dir_bytes(path))}
        notes = [f"compressed-tensors checkpoint written to {path}"]
        if config.verify:
            errs = check_round_trip(workload.model, reload(path))
            figures["export_max_abs_weight_diff"] = max(errs.values(), default=0.0)
            notes.append(f"reloaded with compressed-tensors: {len(errs)} quantized layers, weights round-trip exactly")
        from optimizers.runtimes import vllm

        peers = vllm.peers_for(path, workload.device, notes)  # serves the serving trace from this checkpoint
        return StepRecord(workload, notes=notes, artifacts=[str(path)], check_metrics=figures, peers=peers)
