"""Huffman coding, Deep Compression's stage 3 (Han, Mao & Dally, ICLR 2016, §4): the integer codes
of shared (or ternary / binary) layers are canonical-Huffman coded per layer
(``optimizers.huffman``), so frequent codes — a pruned layer's zero above all — take fewer bits.
Lossless: the decoded codes are the same. The runtime needs the decode: each layer decodes once, at
its first forward, into a cache that is runtime memory, not stored bytes.

Sample playbook step (after ``weight_sharing``)::

    - technique: huffman_coding
"""
from __future__ import annotations

import copy

import torch
from pydantic import Field

from optimizers import huffman
from optimizers.base import StepRecord, Technique, TechniqueConfig
from optimizers.quant import coded as C
from optimizers.quant.modules import set_module
from optimizers.registry import register
from optimizers.workloads.base import Workload


class HuffmanCodingConfig(TechniqueConfig):
    block_size: int = Field(1024, ge=64, le=1 << 20, description="codes per independently decodable block "
                            "(each block starts on a byte and costs a 4-byte offset; all blocks decode in lockstep)")


def entropy_bits_per_weight(mods: list[C.CodedWeight]) -> float:
    """Shannon entropy of each layer's codes, averaged over their weights: the bound Huffman meets within a bit."""
    n = sum(m.numel for m in mods)
    counts = [torch.bincount(m.codes().reshape(-1).long(), minlength=2**m.bits).tolist() for m in mods]
    return sum(m.numel * huffman.entropy_bits(c) for m, c in zip(mods, counts)) / n


@register
class HuffmanCoding(Technique):
    name = "huffman_coding"
    summary = "Deep Compression stage 3: canonical Huffman coding of shared/ternary/binary layers' codes (lossless)"
    Config = HuffmanCodingConfig

    def apply(self, workload: Workload, config: HuffmanCodingConfig) -> StepRecord:
        model = copy.deepcopy(workload.model).eval()
        layers = [(n, m) for n, m in model.named_modules() if type(m) is C.CodedWeight]
        if not layers:
            raise ValueError("huffman_coding codes the integer codes of shared layers and this model has none: "
                             "run weight_sharing first (or ternary_weights / binary_weights)")
        mods = [m for _, m in layers]
        before = C.storage_figures(mods)
        entropy = entropy_bits_per_weight(mods)
        kept = 0
        for n, m in layers:
            coded = C.HuffmanCodedWeight.from_coded(m, config.block_size)
            if C.weight_bytes(coded) < C.weight_bytes(m):
                set_module(model, n, coded)
            else:  # e.g. binary codes: two equally likely symbols take a bit each anyway
                kept += 1
        after = C.storage_figures(C.coded_modules(model))
        diagnostics = {**after, "bits_per_weight_before": before["bits_per_weight"],
                       "entropy_bits_per_weight": entropy, "layers_kept_packed": float(kept)}
        notes = [f"Huffman-coded {len(layers) - kept}/{len(layers)} coded layers: {before['bits_per_weight']:.2f} → "
                 f"{after['bits_per_weight']:.2f} bits per weight (codes' entropy {entropy:.2f}; codebook, scales "
                 "and block offsets included)", C.storage_note(after),
                 "runtime needs the decode: each layer decodes its codes once, at its first forward, into a "
                 "cache that counts as runtime memory, not stored bytes"]
        if kept:
            notes.append(f"{kept} layers stay bit-packed: Huffman coding would not make them smaller")
        return StepRecord(workload.with_model(model), notes=notes, diagnostics=diagnostics)
