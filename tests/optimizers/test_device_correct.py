"""Every technique keeps every tensor on the model's device. Without a GPU, two traps make the
usual CUDA-worker crashes visible on the CPU: the default device is ``meta`` while a technique
runs (a tensor created without ``device=`` lands on meta and no longer mixes with the model's),
and ``Tensor.cpu()`` raises (moving calibration data off the model's device)."""
from __future__ import annotations

from unittest import mock

import pytest
import torch

from optimizers import registry
from optimizers.quant.testing import tiny_lm_workload
from optimizers.training.transform import TrainingTransform
from optimizers.workloads import load_workload

PARAMS = {"awq": {"group_size": 32}, "gptq": {"group_size": 32}, "int4_weight_only": {"group_size": 32},
          "qat": {"group_size": 32, "steps": 2}}
# not model transforms that could misplace a tensor: a check-only export of an already quantized
# model, Triton kernels (own device checks), the compiler, decoding with a draft (no new tensors), and
# ONNX Runtime (vision / encoder only; its session's outputs go to the model's device, tested in its own file)
EXEMPT = {"export_compressed_tensors", "triton_kernels", "torch_compile", "speculative_decoding", "onnx_runtime"}
# the techniques that train need a training split (this tiny workload has none); they run on tiny-llama's in
# tests/optimizers/training/test_compression_training.py, their batches made on the CPU and moved to the model's device
TRAINS = {n for n in registry.names() if isinstance(registry.get(n), TrainingTransform)}
# a step that codes another step's output (Huffman-codes shared weights) gets that step first, outside the trap
BEFORE = {"huffman_coding": "weight_sharing"}
GENERIC = sorted(n for n in registry.names()
                 if {"cpu", "cuda"} <= registry.get(n).devices and n not in EXEMPT and n not in TRAINS)


def workload_for(name: str):
    """The small workload a generic technique test runs ``name`` on: digits-cnn for the conv-only
    ones, else tiny-llama; with the step it codes applied first where it needs one."""
    wl = load_workload("digits-cnn") if registry.get(name).tasks == {"vision"} else tiny_lm_workload(n_calib=2)
    if name in BEFORE:
        first = registry.get(BEFORE[name])
        wl = first.apply(wl, first.config()).workload
    return wl


@pytest.mark.parametrize("name", GENERIC)
def test_technique_creates_no_tensor_off_the_models_device(name):
    tech = registry.get(name)
    wl = workload_for(name)
    cfg = tech.config(PARAMS.get(name, {}))
    with mock.patch.object(torch.Tensor, "cpu", side_effect=AssertionError(f"{name} moved a tensor to the CPU")):
        torch.set_default_device("meta")
        try:
            out = tech.apply(wl, cfg).workload
        finally:
            torch.set_default_device(None)
    tensors = list(out.model.named_parameters()) + list(out.model.named_buffers())
    off = [n for n, t in tensors if t is not None and t.device.type != "cpu"]
    assert not off, f"{name} left tensors off the model's device: {off[:5]}"


def test_the_trap_catches_a_tensor_made_without_device():
    torch.set_default_device("meta")
    try:
        made = torch.zeros(3)
    finally:
        torch.set_default_device(None)
    assert made.device.type == "meta"  # so such a tensor cannot pass for the model's
