"""Compression that trains, each by its defining property on tiny models: the distillation loss is
Hinton's formula; a derived student is the teacher's every second block; masks stay fixed during
recovery (no pruned weight revives) and a distillation refresh keeps them too; the cubic schedule
and GMP hit their targets; movement scores accumulate −∂L/∂W·W; RigL and SET keep every layer's
non-zero count across drop/regrow; SNIP keeps the most sensitive connections; a lottery ticket's
survivors are rewound; iterative pruning's rounds each prune the same fraction of survivors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optimizers import registry
from optimizers import sparsity as S
from optimizers.training import sparse
from optimizers.training.distill import Distiller, every_second_layer, kd_loss, layer_map
from optimizers.training.loop import task_logits, task_loss
from optimizers.techniques.iterative_pruning import round_sparsity
from optimizers.workloads import load_workload

BUDGET = {"steps": 4, "batch_size": 4, "seq_len": 32, "lr": 1e-3}


@pytest.fixture(scope="module")
def tiny():
    return load_workload("tiny-llama")


def apply(name: str, workload, **params):
    tech = registry.get(name)
    return tech.apply(workload, tech.config({**BUDGET, **params}))


def test_kd_loss_is_hintons_formula():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    y = torch.randint(0, 10, (6,), generator=g)
    T, a = 3.0, 0.7
    pt, ps = torch.softmax(t / T, -1), torch.softmax(s / T, -1)
    kl = (pt * (pt.log() - ps.log())).sum(-1).mean()  # per row, averaged over rows
    ce = -torch.log_softmax(s, -1)[torch.arange(6), y].mean()
    assert float(kd_loss(s, t, y, T, a)) == pytest.approx(float(a * T * T * kl + (1 - a) * ce), rel=1e-5)
    assert float(kd_loss(s, t, y, T, 0.0)) == pytest.approx(float(F.cross_entropy(s, y)), rel=1e-6)
    assert float(kd_loss(t, t, y, T, 1.0)) == pytest.approx(0.0, abs=1e-6)  # a student equal to its teacher
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, t, y, 0.0, 0.5)


def test_task_logits_give_the_task_loss(tiny):
    batch = tiny.calibration[0][:, :32]
    logits, targets = task_logits(tiny.model, batch, "causal_lm")
    assert float(F.cross_entropy(logits, targets)) == pytest.approx(float(task_loss(tiny.model, batch, "causal_lm")),
                                                                    rel=1e-5)


def test_every_second_layer_is_the_teachers_blocks_renumbered(tiny):
    teacher = tiny.model
    assert layer_map(2, 4) == [(1, 2), (2, 4)] and layer_map(1, 2) == [(1, 2)]
    student = every_second_layer(teacher)
    assert student.config.num_hidden_layers == 1 and teacher.config.num_hidden_layers == 2
    assert torch.equal(student.model.layers[0].self_attn.q_proj.weight, teacher.model.layers[0].self_attn.q_proj.weight)
    assert student.model.layers[0].self_attn.q_proj.weight is not teacher.model.layers[0].self_attn.q_proj.weight
    with torch.no_grad():  # it runs, with a cache, as a one-layer model
        out = student.generate(tiny.calibration[0][:, :8], max_new_tokens=3, do_sample=False)
    assert out.shape[1] == 11


def test_feature_distiller_projects_and_maps_layers(tiny):
    teacher = tiny.model
    student = every_second_layer(teacher)
    kd = Distiller(teacher, beta=1.0, student=student)
    assert kd.pairs == [(1, 2)] and isinstance(kd.proj, nn.Identity)  # equal widths: no projection to learn
    batch = tiny.calibration[0][:, :32]
    with_features = float(kd.loss(student, batch, "causal_lm"))
    plain = float(Distiller(teacher).loss(student, batch, "causal_lm"))
    assert with_features > plain  # the hidden-state term adds a positive penalty
    same = Distiller(teacher, beta=1.0, student=teacher)
    states = task_logits(teacher, batch, "causal_lm", hidden=True)[2]
    assert float(same.feature_loss(states, states)) == pytest.approx(0.0, abs=1e-6)


def test_recovery_keeps_every_mask_and_trains_the_rest(tiny):
    pr = registry.get("magnitude_pruning")
    pruned = pr.apply(tiny, pr.config({"amount": 0.6, "store_sparse": False})).workload
    masks = sparse.masks_from_zeros(pruned.model)
    rec = apply("recovery_finetune", pruned)
    assert rec.diagnostics["pruned_weights_revived"] == 0 and rec.diagnostics["masked_layers"] == len(masks) > 0
    assert rec.diagnostics["sparsity"] == pytest.approx(0.6, abs=0.01)
    layers = dict(S.prunable_linears(rec.model))
    changed = any(not torch.equal(layers[n].weight[keep], dict(S.prunable_linears(pruned.model))[n].weight[keep])
                  for n, keep in masks.items())
    assert changed  # the survivors trained
    assert rec.workload.original is tiny.model  # the chain remembers the model before compression
    kd = apply("recovery_finetune", pruned, teacher="original")
    assert kd.diagnostics["pruned_weights_revived"] == 0
    with pytest.raises(ValueError, match="no earlier step changed the model"):
        apply("recovery_finetune", tiny, teacher="original")


def test_distillation_students_and_control(tiny):
    rec = apply("knowledge_distillation", tiny, student="every_second_layer")
    assert rec.model.config.num_hidden_layers == 1
    assert rec.diagnostics["student_params"] < rec.diagnostics["teacher_params"]
    assert "control_perplexity" in rec.diagnostics and len(rec.details["control_loss_curve"]) == BUDGET["steps"]
    assert rec.details["loss_curve"] != rec.details["control_loss_curve"]  # the teacher changed the training
    with pytest.raises(ValueError, match="no earlier step changed the model"):
        apply("knowledge_distillation", tiny)  # student=self with nothing compressed
    from optimizers.base import Target

    verdict = registry.get("knowledge_distillation").check(Target.of(tiny), registry.get(
        "knowledge_distillation").config({"student": "draft"}))
    assert verdict.status == "refused" and "no draft model" in verdict.reason


def test_cubic_schedule_and_gmp_hit_the_target(tiny):
    assert sparse.cubic_sparsity(0, 0.8, 0, 10) == 0.0 and sparse.cubic_sparsity(10, 0.8, 0, 10) == 0.8
    values = [sparse.cubic_sparsity(t, 0.8, 0, 10) for t in range(11)]
    assert values == sorted(values)
    assert values[1] - values[0] > values[10] - values[9]  # fast early, slow late
    assert values[5] == pytest.approx(0.8 * (1 - 0.5 ** 3))
    rec = apply("gmp", tiny, sparsity=0.5, prune_until=0.5, every=1, steps=6)
    assert rec.diagnostics["sparsity"] == pytest.approx(0.5, abs=1e-3)
    mov = apply("movement_pruning", tiny, sparsity=0.5, prune_until=0.5, every=1, steps=6)
    assert mov.diagnostics["sparsity"] == pytest.approx(0.5, abs=1e-3)


def _toy() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_movement_scores_accumulate_minus_grad_times_weight():
    model = _toy()
    hook = sparse.Movement(0.5, 0, 4)
    hook.on_start(model)
    x = torch.randn(5, 8)
    expected = {n: torch.zeros_like(m.weight) for n, m in sparse.prunable(model)}
    for k in range(2):
        model.zero_grad()
        model(x).pow(2).sum().backward()
        for n, m in sparse.prunable(model):
            expected[n] -= m.weight.grad * m.weight
        hook.before_step(model, k)
    for n in expected:
        assert torch.allclose(hook.movement[n], expected[n])


@pytest.mark.parametrize("regrow", ["gradient", "random"])
def test_drop_regrow_keeps_each_layers_nonzero_count(regrow):
    model = _toy()
    hook = sparse.DropRegrow(0.5, regrow, drop_fraction=0.3, every=1, end=10)
    hook.on_start(model)
    counts = {n: int(k.sum()) for n, k in hook.masks.items()}
    assert sum(counts.values()) == round(0.5 * sum(m.weight.numel() for _, m in sparse.prunable(model)))
    before = {n: k.clone() for n, k in hook.masks.items()}
    model(torch.randn(5, 8)).pow(2).sum().backward()
    hook.before_step(model, 0)
    hook.after_step(model, 0)
    assert hook.updates == 1
    assert {n: int(k.sum()) for n, k in hook.masks.items()} == counts
    assert any(not torch.equal(before[n], hook.masks[n]) for n in counts)  # connections moved
    for n, m in sparse.prunable(model):
        assert int((m.weight != 0).sum()) <= counts[n] and not bool((m.weight[~hook.masks[n]] != 0).any())
        grown = hook.masks[n] & ~before[n]
        assert bool((m.weight[grown] == 0).all())  # regrown connections start at zero


def test_rigl_technique_holds_the_sparsity(tiny):
    rec = apply("rigl", tiny, sparsity=0.5, every=1, steps=5)
    assert rec.diagnostics["mask_updates"] >= 2 and rec.diagnostics["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_snip_keeps_the_most_sensitive_connections():
    model = _toy()
    x, y = torch.randn(5, 8), torch.randn(5, 4)
    loss = F.mse_loss(model(x), y)
    grads = torch.autograd.grad(loss, [m.weight for _, m in sparse.prunable(model)], retain_graph=True)
    masks = sparse.snip_masks(model, loss, 0.75)
    scores = torch.cat([(g * m.weight).abs().flatten() for g, (_, m) in zip(grads, sparse.prunable(model))])
    kept = torch.cat([k.flatten() for k in masks.values()])
    assert int(kept.sum()) == round(0.25 * kept.numel())
    assert float(scores[kept].min()) >= float(scores[~kept].max())


def test_lottery_ticket_rewinds_the_survivors(tiny):
    rec = apply("lottery_ticket", tiny, sparsity=0.5, steps=4)
    assert rec.diagnostics["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert rec.diagnostics["train_steps"] == 8 and "dense_eval_loss" in rec.diagnostics
    with pytest.raises(ValueError, match="rewind_step"):
        apply("lottery_ticket", tiny, rewind_step=4)


def test_iterative_pruning_rounds(tiny):
    assert round_sparsity(0.75, 2, 2) == pytest.approx(0.75)
    kept = [1 - round_sparsity(0.875, r, 3) for r in range(4)]
    assert kept[1] / kept[0] == pytest.approx(kept[2] / kept[1]) == pytest.approx(kept[3] / kept[2]) == pytest.approx(0.5)
    rec = apply("iterative_pruning", tiny, sparsity=0.75, rounds=2, steps=3)
    rounds = rec.details["rounds"]
    assert [r["sparsity"] for r in rounds] == pytest.approx([0.5, 0.75], abs=1e-3)
    assert rec.diagnostics["train_steps"] == 6 and len(rec.details["loss_curve"]) == 6
    assert math.isfinite(rec.diagnostics["eval_loss"])


def test_csr_layers_train_dense_and_are_stored_sparse_again(tiny):
    pr = registry.get("magnitude_pruning")
    pruned = pr.apply(tiny, pr.config({"amount": 0.9, "scope": "layer"})).workload
    assert any(isinstance(m, S.SparseCSRLinear) for m in pruned.model.modules())
    rec = apply("recovery_finetune", pruned)
    assert rec.diagnostics["pruned_weights_revived"] == 0
    before = {n: m.dense_weight() for n, m in pruned.model.named_modules() if isinstance(m, S.SparseCSRLinear)}
    after = {n: m.dense_weight() for n, m in rec.model.named_modules() if isinstance(m, S.SparseCSRLinear)}
    assert set(after) == set(before)
    assert any(not torch.equal(before[n], after[n]) for n in before)  # they trained, as dense layers
    assert all(torch.equal(before[n] == 0, after[n] == 0) for n in before)  # on the same pattern


def test_gqa_conversion_is_the_mean_of_each_groups_heads(tiny):
    from optimizers.techniques.gqa import attention_layers, convert

    heads, q_heads = tiny.model.config.num_key_value_heads, tiny.model.config.num_attention_heads
    head_dim = tiny.model.config.head_dim
    converted, old = convert(tiny.model, 1)
    assert old == heads and converted.config.num_key_value_heads == 1
    assert tiny.model.config.num_key_value_heads == heads  # the original is untouched
    for a, b in zip(attention_layers(tiny.model), attention_layers(converted)):
        for proj in ("k_proj", "v_proj"):
            w = getattr(a, proj).weight.reshape(heads, head_dim, -1).mean(0)
            assert torch.equal(getattr(b, proj).weight, w)
        assert b.num_key_value_groups == q_heads
    with torch.no_grad():  # it runs and caches one KV head per layer
        out = converted(input_ids=tiny.calibration[0][:, :8], use_cache=True)
    assert out.past_key_values.layers[0].keys.shape[1] == 1
    with pytest.raises(ValueError, match="must be fewer than the model's"):
        convert(tiny.model, heads)
    rec = apply("mqa", tiny, steps=3)
    assert rec.model.config.num_key_value_heads == 1 and rec.diagnostics["kv_heads_before"] == heads
    assert rec.workload.meta["config"]["num_key_value_heads"] == 1


def test_early_exit_follows_its_threshold_and_keeps_the_full_depth_prediction():
    from optimizers.techniques.early_exit import EarlyExitCNN, exit_statistics
    from optimizers.workloads.digits_cnn import DigitsCNN

    torch.manual_seed(0)
    base = DigitsCNN().eval()
    x = torch.rand(16, 1, 8, 8)
    model = EarlyExitCNN(base, "confidence", 1.01).eval()  # never sure enough: everything runs to the end
    with torch.no_grad():
        assert torch.allclose(model(x), base(x), atol=1e-6)
        stats = exit_statistics(model, x, torch.zeros(16, dtype=torch.int64))
        assert stats["mean_blocks_executed"] == model.depth and stats["exited_early_fraction"] == 0.0
        model.threshold = 0.0  # always sure: everything leaves at the first head
        assert torch.allclose(model(x), model.all_exits(x)[0], atol=1e-6)
        stats = exit_statistics(model, x, torch.zeros(16, dtype=torch.int64))
        assert stats["mean_blocks_executed"] == 1.0 and stats["exit_fraction_block1"] == 1.0
        # entropy: exactly the rows whose first-head entropy is under the threshold leave there
        model.criterion = "entropy"
        first = torch.softmax(model.all_exits(x)[0], -1)
        ent = -(first * first.log()).sum(-1)
        model.threshold = float(ent.median())
        model.exit_counts.zero_()
        out = model(x)
        leave = ent < model.threshold
        assert int(model.exit_counts[0]) == int(leave.sum())
        assert torch.allclose(out[leave], model.all_exits(x)[0][leave], atol=1e-6)
        # patience 2: a row leaves at head 2 exactly when heads 1 and 2 agree
        model.criterion, model.patience = "patience", 2
        exits = model.all_exits(x)
        agree = exits[0].argmax(-1) == exits[1].argmax(-1)
        assert torch.allclose(model(x)[agree], exits[1][agree], atol=1e-6)
        assert model.depth == 3 and torch.allclose(model(x)[~agree], exits[-1][~agree], atol=1e-6)


def test_early_exit_trains_only_the_heads():
    wl = load_workload("digits-cnn")
    rec = apply("early_exit", wl, steps=4, batch_size=16, criterion="confidence", threshold=0.9)
    after = rec.model.state_dict()
    for name, value in wl.model.state_dict().items():
        assert torch.equal(after[name], value), name  # the backbone (and its BatchNorm statistics) are unchanged
    d = rec.diagnostics
    assert 1.0 <= d["mean_blocks_executed"] <= 3.0 and d["accuracy_full_depth"] == pytest.approx(
        float((wl.model(wl.eval.images).argmax(-1) == wl.eval.labels).double().mean()))


def test_a_random_init_student_has_the_architecture_and_fresh_weights(tiny):
    rec = apply("knowledge_distillation", tiny, student="every_second_layer", student_init="random", steps=3,
                control=False)
    assert rec.model.config.num_hidden_layers == 1
    assert rec.diagnostics["eval_loss"] < rec.diagnostics["eval_loss_before"]  # from a fresh start it learns
    derived = every_second_layer(tiny.model)
    assert not torch.equal(rec.model.model.embed_tokens.weight, derived.model.embed_tokens.weight)
    assert any("freshly initialised" in n for n in rec.notes)


def test_data_selection_keeps_the_stated_fraction_and_orders_a_curriculum(tiny):
    from optimizers.training.data import train_batches
    from optimizers.training.recipe import DataSelection
    from optimizers.training.selection import pool_size, scores, select

    prune = DataSelection("prune", keep=0.25, score="loss")
    examples = list(range(40))
    s = torch.tensor([float(x % 10) for x in examples])
    g = torch.Generator().manual_seed(0)
    assert pool_size(10, prune) == 40
    chosen = select(examples, s, 10, prune, g)
    assert len(chosen) == 10 and len(set(chosen)) == 10
    assert min(s[chosen].tolist()) >= float(s.sort(descending=True).values[9])  # only the hardest quarter
    curriculum = select(examples, s, 40, DataSelection("curriculum"), g)
    assert s[curriculum].tolist() == sorted(s.tolist())
    # on the LM: the chosen windows are the top quarter of the scored pool, EL2N or loss alike
    for how in ("el2n", "loss"):
        sel = DataSelection("prune", keep=0.25, score=how)
        batches = train_batches(tiny, 3, 4, 16, seed=0, selection=sel, scorer=tiny.model)
        assert len(batches) == 3 and batches[0].shape == (4, 16)
        windows = [w for b in batches for w in b]
        got = scores(tiny.model, windows, "causal_lm", how, "cpu")
        g = torch.Generator().manual_seed(0)
        pool = torch.randint(0, tiny.train().token_ids.numel() - 16, (48,), generator=g)
        pool_scores = scores(tiny.model, [tiny.train().token_ids[p : p + 16] for p in pool.tolist()], "causal_lm",
                             how, "cpu")
        assert float(got.min()) >= float(pool_scores.sort(descending=True).values[11]) - 1e-6
    with pytest.raises(ValueError, match="keep="):
        pool_size(10, DataSelection("prune", keep=0.0))


def test_data_pruning_and_curriculum_run_in_the_training_scenario(tiny):
    from optimizers.scenarios.training import TrainingConfig, measure_training

    cfg = TrainingConfig(steps=4, warmup=1, batch_size=4, seq_len=32, lr=1e-3, eval_batches=2)
    for step, params in (("data_pruning", {"keep": 0.5}), ("curriculum_learning", {"warmup_steps": 3})):
        tech = registry.get(step)
        rec = tech.apply(tiny, tech.config(params))
        m = measure_training(tiny, runtime=rec.settings, training=cfg)
        assert m.metrics["train_steps"] == 4 and math.isfinite(m.metrics["eval_loss"])
        assert ("hardest 50%" if step == "data_pruning" else "easy-to-hard") in m.notes[0]


def test_layerdrop_skips_blocks_at_its_rate_in_training_only_and_prunes_every_other(tiny):
    from optimizers.techniques.layerdrop import SkippableBlock

    inner = nn.Linear(4, 4)
    block = SkippableBlock(inner, 0.3, torch.Generator().manual_seed(0)).train()
    x = torch.randn(2, 4)
    skipped = sum(torch.equal(block(x), x) for _ in range(2000)) / 2000
    assert skipped == pytest.approx(0.3, abs=0.04)
    block.eval()
    assert not any(torch.equal(block(x), x) for _ in range(50))  # never at inference
    rec = apply("layerdrop", tiny, steps=4)
    assert rec.model.config.num_hidden_layers == 1 and rec.diagnostics["blocks_before"] == 2
    assert not any(isinstance(m, SkippableBlock) for m in rec.model.modules())
    assert "control_perplexity" in rec.diagnostics and "untrained_pruned_perplexity" in rec.diagnostics


def test_gqa_steps_leave_a_gqa_model_alone_unless_asked_to_convert(tiny):
    from optimizers.base import Target

    gqa, mqa = registry.get("gqa"), registry.get("mqa")
    target = Target.of(tiny)
    q, kv = target.attention_heads
    assert kv < q  # tiny-llama already groups its K/V heads
    v = gqa.check(target, gqa.config({}))
    assert v.status == "advice_only" and f"already in the model ({kv} K/V heads for {q} query heads)" in v.reason
    assert gqa.check(target, gqa.config({"kv_heads": 1})).runnable and mqa.check(target, mqa.config({})).runnable
    v = gqa.check(target, gqa.config({"kv_heads": kv}))
    assert v.status == "refused" and v.blame == "config"
    from dataclasses import replace

    mha = replace(target, attention_heads=(q, q))
    assert not gqa.check(mha, gqa.config({"convert": False})).runnable
    assert gqa.check(mha, gqa.config({})).runnable and gqa.kv_heads(gqa.config({}), 32) == 8
    assert mqa.check(replace(target, attention_heads=(q, 1)), mqa.config({})).reason.startswith("already")


def test_upcycled_moe_computes_the_dense_mlp_before_training_and_balances_its_load(tiny):
    from optimizers.techniques.moe_upcycling import UpcycledMoE, active_params, upcycle

    moe, n = upcycle(tiny.model, experts=4, top_k=2)
    assert n == tiny.model.config.num_hidden_layers
    x = tiny.calibration[0][:, :16]
    with torch.no_grad():  # identical experts, renormalised top-k weights: the dense model's outputs
        assert torch.allclose(moe(input_ids=x).logits, tiny.model(input_ids=x).logits, atol=1e-4)
    layer = next(m for m in moe.modules() if isinstance(m, UpcycledMoE))
    assert torch.allclose(layer.load.sum(), torch.tensor(1.0)) and float(layer.aux_loss) > 0  # E·Σ f·P
    per_expert = sum(p.numel() for p in layer.experts[0].parameters())
    assert active_params(moe, 2) == sum(p.numel() for p in moe.parameters()) - 2 * n * per_expert
    rec = apply("moe_upcycling", tiny, experts=4, top_k=1, steps=3)
    d = rec.diagnostics
    assert d["params_total"] > d["params_dense"] and d["params_active_per_token"] < d["params_total"]
    assert "control_perplexity" in d
