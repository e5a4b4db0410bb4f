"""Sharded training on tiny-llama over 2 real rank processes (torch.distributed.run, gloo on the
CPU): ZeRO-3 (FSDP2) and ZeRO-1 (ZeroRedundancyOptimizer + DDP) follow the single process's loss
curve, hold the share of the model state their stage shards on each rank, report progress per
step and hand back the whole trained model; a model that is not plain float weights is refused
before anything launches. One launch per stage (~15 s each: process start and imports)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist

from optimizers.quant.nf4 import QuantLinearNF4
from optimizers.scenarios.training import TrainingConfig
from optimizers.training.distributed import train_sharded
from optimizers.training.loop import train
from optimizers.training.recipe import Adapter, Recipe, Sharding
from optimizers.workloads import load_workload

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")

CFG = TrainingConfig(steps=5, warmup=1, batch_size=4, seq_len=32, lr=1e-3, eval_batches=2)


@pytest.fixture(scope="module")
def tiny():
    return load_workload("tiny-llama")


@pytest.fixture(scope="module")
def single(tiny):
    return train(tiny, Recipe(), CFG)


@pytest.fixture(scope="module", params=[3, 1], ids=["zero3-fsdp2", "zero1"])
def sharded(request, tiny):
    steps: list[tuple[int, int, float]] = []
    result = train_sharded(tiny, Recipe(sharding=Sharding(stage=request.param, ranks=2)), CFG,
                           on_step=lambda k, n, loss: steps.append((k, n, loss)))
    return request.param, result, steps


def model_state(r) -> int:
    return r.memory["params"] + r.memory["grads"] + r.memory["optimizer"]


@pytest.mark.slow
def test_the_loss_curve_is_the_single_process_one(sharded, single):
    stage, r, steps = sharded
    rel = max(abs(a - b) / abs(b) for a, b in zip(r.losses, single.losses))
    assert len(r.losses) == CFG.steps and rel <= 1e-4, stage  # observed 1.5e-7 for both stages
    assert [(k, n) for k, n, _ in steps] == [(k, CFG.steps) for k in range(1, CFG.steps + 1)]
    assert [loss for *_, loss in steps] == r.losses  # rank 0's progress lines, polled by the parent
    assert r.eval_loss == pytest.approx(single.eval_loss, rel=1e-5)
    assert r.eval_loss_before == pytest.approx(single.eval_loss_before, rel=1e-6)
    assert len(r.step_ms) == CFG.steps - CFG.warmup - 1 and r.tokens_per_step == single.tokens_per_step
    assert r.trainable == single.trainable and r.total == single.total


@pytest.mark.slow
def test_each_rank_holds_its_stage_share_of_the_model_state(sharded, single):
    stage, r, _ = sharded
    m, s = r.memory, single.memory
    if stage == 3:  # parameters, gradients and states all sharded: each rank its half
        assert model_state(r) <= 0.55 * model_state(single)  # observed 0.50
        assert m["params"] == pytest.approx(0.5 * s["params"], rel=0.02)
        assert m["grads"] == pytest.approx(0.5 * s["grads"], rel=0.02)
    else:  # only the AdamW states sharded (by whole parameters), DDP's gradients whole on each rank
        assert m["params"] == s["params"] and m["grads"] == s["grads"]
    assert m["optimizer"] == pytest.approx(0.5 * s["optimizer"], rel=0.05)  # observed 0.5000 / 0.5001
    assert m["peak"] >= model_state(r)
    assert any("per-rank memory of rank 0 of 2 (gloo, CPU)" in n for n in r.notes)


@pytest.mark.slow
def test_the_trained_model_comes_back_whole_and_plain(sharded, single):
    _, r, _ = sharded
    state, ref = r.model.state_dict(), single.model.state_dict()
    assert state.keys() == ref.keys()
    assert all(type(v) is torch.Tensor for v in state.values())  # no DTensor shards, no DDP "module." prefix
    assert max(float((state[k] - ref[k]).abs().max()) for k in ref) < 1e-4  # observed 5.4e-6


def test_a_model_that_is_not_plain_float_weights_is_refused_before_launch(tiny):
    sharding = Recipe(sharding=Sharding(stage=3, ranks=2))
    nf4 = copy.deepcopy(tiny.model)
    nf4.model.layers[0].mlp.down_proj = QuantLinearNF4.from_linear(nf4.model.layers[0].mlp.down_proj)
    with pytest.raises(ValueError, match="model.layers.0.mlp.down_proj is a QuantLinearNF4.*fsdp/zero shard a plain "
                                         "float model; put quantizers after the training steps"):
        train_sharded(tiny.with_model(nf4), sharding, CFG)
    qbuf = copy.deepcopy(tiny.model)
    qbuf.register_buffer("scales", torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8))
    with pytest.raises(ValueError, match="scales is a Tensor .torch.qint8., not a plain tensor: fsdp/zero shard"):
        train_sharded(tiny.with_model(qbuf), sharding, CFG)
    with pytest.raises(ValueError, match="lora adapters are not sharded here"):
        train_sharded(tiny, Recipe(adapter=Adapter(), sharding=Sharding(stage=3, ranks=2)), CFG)
    with pytest.raises(ValueError, match="batch_size=4 must split into sharding.ranks=3 equal slices.*try batch_size=3"):
        train_sharded(tiny, Recipe(sharding=Sharding(stage=1, ranks=3)), CFG)
