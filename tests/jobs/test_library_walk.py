"""Every library playbook on every built-in workload is accepted with the scenario it will be
judged in, or refused before anything is written with a reason naming the scenario, the step or
the gate. (Executing every pair is `make bench`'s job; this walk is the up-front contract.)"""
from __future__ import annotations

import pytest

from jobs import submit
from optimizers.scenarios import SCENARIOS
from optimizers.workloads import workload_names, workload_task
from playbooks.errors import PlaybookError
from playbooks.schema import library

PAIRS = [(p, w) for p in sorted(library()) for w in workload_names()]


@pytest.mark.parametrize("playbook, workload", PAIRS)
def test_library_playbook_is_accepted_or_refused_up_front(playbook, workload):
    pb = library()[playbook]
    try:
        resolved = submit.validate_request(pb, workload, "cpu")
    except PlaybookError as err:
        msg = str(err)
        assert "scenario" in msg and ("not built" in msg or "does not apply" in msg or "not measured" in msg), msg
        return
    sc = SCENARIOS[resolved.scenario]
    assert sc.built and all(g.metric in sc.metrics for g in resolved.expect)


RECIPE_PLAYBOOKS = ("training-optimization", "vram-bound-training", "efficient-llm-training-small-clusters",
                    "training-large-dense-models", "memory-tight-finetuning", "cost-efficient-instruction-tuning",
                    "model-too-big-to-finetune")


def test_training_playbooks_are_judged_in_the_training_scenario_on_training_metrics():
    for name, pb in library().items():
        goals = set(pb.when.get("goal") or [])
        if goals & {"pretrain", "finetune"}:
            resolved = submit.validate_request(pb, "ref-lm", "cpu")
            assert resolved.scenario == "training", name
            if name in RECIPE_PLAYBOOKS:  # judged on what their recipe changes: training memory and time
                assert any(g.metric.startswith("train_") for g in resolved.expect), name


def test_serving_playbook_on_a_causal_lm_is_judged_serving_unless_inference_is_asked_for():
    pb = library()["int8-dynamic"]
    assert workload_task("tiny-llama") == "causal_lm"
    assert submit.validate_request(pb, "tiny-llama", "cpu").scenario == "serving"
    assert submit.validate_request(pb, "tiny-llama", "cpu", scenario="inference").scenario == "inference"
    assert submit.validate_request(pb, "minilm", "cpu").scenario == "inference"  # not a causal LM: inference


def test_gates_and_settings_outside_the_scenario_are_refused():
    with pytest.raises(PlaybookError, match=r"expect\[0\].metric='train_loss' is not measured in the inference"):
        submit.validate_request({"name": "g", "title": "g", "steps": [{"technique": "int8_dynamic"}],
                                 "expect": [{"metric": "train_loss", "max": 3}]}, "tiny-llama", "cpu")
    with pytest.raises(PlaybookError, match=r"steps\[0\] \(continuous_batching\) is a runtime setting the inference "
                                            "scenario does not apply"):
        submit.validate_request({"name": "g", "title": "g", "steps": [{"technique": "continuous_batching"}]},
                                "tiny-llama", "cpu", scenario="inference")
    with pytest.raises(PlaybookError, match="trace: describes the serving scenario's requests"):
        submit.validate_request({"name": "g", "title": "g", "steps": [{"technique": "int8_dynamic"}],
                                 "trace": {"requests": 4}}, "minilm", "cpu")
    with pytest.raises(PlaybookError, match=r"steps\[0\] \(lora\) is a recipe setting the serving scenario does not "
                                            "apply"):
        submit.validate_request({"name": "g", "title": "g", "steps": [{"technique": "lora"}]}, "tiny-llama", "cpu",
                                scenario="serving")
    with pytest.raises(PlaybookError, match="training: sets the training scenario's budget"):
        submit.validate_request({"name": "g", "title": "g", "steps": [{"technique": "int8_dynamic"}],
                                 "training": {"steps": 4}}, "tiny-llama", "cpu")
    with pytest.raises(PlaybookError, match="training.steps"):
        submit.validate_request({"name": "g", "title": "g", "steps": [{"technique": "lora"}],
                                 "training": {"steps": 3}}, "tiny-llama", "cpu", scenario="training")
    with pytest.raises(PlaybookError, match="scenario=.warp. is not valid"):
        submit.validate_request({"name": "g", "title": "g", "steps": [{"technique": "int8_dynamic"}]}, "tiny-llama",
                                "cpu", scenario="warp")


def test_a_playbook_without_a_goal_but_with_serving_steps_is_judged_serving():
    """The Guide hands a playbook over without its `when`: its continuous-batching step still says
    it is a serving playbook on a causal LM (and inference on anything else)."""
    pb = {"name": "g", "title": "g", "steps": [{"technique": "int8_dynamic"}, {"technique": "continuous_batching"}]}
    assert submit.validate_request(pb, "tiny-llama", "cpu").scenario == "serving"
    plain = {"name": "g", "title": "g", "steps": [{"technique": "int8_dynamic"}, {"technique": "torch_compile"}]}
    assert submit.validate_request(plain, "tiny-llama", "cpu").scenario == "inference"
