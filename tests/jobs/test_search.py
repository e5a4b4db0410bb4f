"""Searches: the space is checked against the steps (a bad range names its parameter), the grid
skips parameters a technique does not take, the Pareto front and closest miss on known points,
proposals never repeat a tried configuration and are reproducible from the same history and seed,
dispatch is a compare-and-set, and a whole local search on tiny-llama stores its trials as runs."""
from __future__ import annotations

import threading

import pytest

from jobs import search
from playbooks import search as sp
from playbooks.errors import PlaybookError
from playbooks.schema import Gate, library, parse_playbook

BASE = {"name": "tune-x", "title": "tune", "scenario": "inference",
        "steps": [{"technique": "magnitude_pruning", "params": {"amount": 0.5}}],
        "expect": [{"metric": "perplexity", "max_ratio": 1.5}]}


def pb_with(space, **spec):
    return parse_playbook({**BASE, "search": {"space": space, **spec}})


# ---------------------------------------------------------------- the space

@pytest.mark.parametrize("space, match", [
    ({"steps[0].amount": {"low": 0.8, "high": 0.2}}, r"search\.space\.steps\[0\]\.amount.*low=0\.8 must be below high=0\.2"),
    ({"steps[0].amount": {"low": 0.1, "high": 0.5, "step": 0}}, r"steps\[0\]\.amount.*step=0 must be in"),
    ({"steps[0].amount": {"low": 0.0, "high": 0.5, "log": True}}, r"steps\[0\]\.amount.*log=true needs low > 0"),
    ({"steps[0].amount": []}, r"steps\[0\]\.amount: an empty list"),
    ({"steps[0].amount": [0.2, 0.2]}, r"steps\[0\]\.amount: the values repeat"),
    ({"steps[0].amount": [0.2, 1.5]}, r"search\.space\.steps\[0\]\.amount: 1\.5 is not valid for magnitude_pruning"),
    ({"steps[0].rank": [8, 16]}, r"search\.space\.steps\[0\]\.rank: no candidate technique of steps\[0\] \(magnitude_pruning\) takes"),
    ({"steps[3].amount": [0.2]}, r"search\.space\.steps\[3\]\.amount: the playbook has 1 steps"),
    ({"amount": [0.2]}, r"search\.space\.amount: write a key as steps\[i\]\.param"),
    ({"steps[0].technique": ["magnitude_pruning", "nope"]}, r"steps\[0\]\.technique: 'nope' is not a registered technique"),
])
def test_bad_space_is_refused_naming_the_parameter(space, match):
    with pytest.raises(PlaybookError, match=match):
        pb_with(space)


def test_grid_over_floats_needs_a_step_and_huge_grids_are_refused():
    with pytest.raises(PlaybookError, match=r"steps\[0\]\.amount: a grid needs finite values"):
        pb_with({"steps[0].amount": {"low": 0.1, "high": 0.9}}, strategy="grid")
    pb_with({"steps[0].amount": {"low": 0.1, "high": 0.9}}, strategy="tpe")  # continuous is fine for a sampler
    r = sp.Range(low=0.1, high=0.5, step=0.1)
    assert r.values() == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert sp.Range(low=16, high=64, step=16).values() == [16, 32, 48, 64]
    assert sp.Range(low=2, high=4).integer and sp.Range(low=2, high=4).values() == [2, 3, 4]


def test_a_search_needs_objectives_or_gates():
    with pytest.raises(PlaybookError, match="search: needs objectives"):
        parse_playbook({**BASE, "expect": [], "search": {"space": {"steps[0].amount": [0.2, 0.4]}}})


def test_the_int4_grid_drops_act_order_for_rtn_and_has_twelve_distinct_trials():
    pb = library()["int4-weight-only"]
    configs = list(sp.grid(sp.dims(pb.search, pb.steps), pb.steps))
    assert len(configs) == 12 == 4 * 2 + 4  # GPTQ: group × act-order; RTN: group only
    rtn = [c for c in configs if c["steps[0].technique"] == "int4_weight_only"]
    assert len(rtn) == 4 and all("steps[0].act_order" not in c for c in rtn)
    trial = sp.apply_config(pb.model_dump(), rtn[0], 9)
    assert trial["steps"][0] == {"technique": "int4_weight_only", "params": {"group_size": 16}, "alternatives": {}}
    assert "search" not in trial and "trial 9" in trial["title"]
    parse_playbook(trial)


# ---------------------------------------------------------------- scoring

def test_gate_shortfall_is_the_fraction_off_the_bound():
    assert sp.gate_shortfall(Gate(metric="p", max_ratio=1.05), 10.0, 11.0) == pytest.approx(1.1 / 1.05 - 1)
    assert sp.gate_shortfall(Gate(metric="p", max_ratio=1.05), 10.0, 10.2) == 0.0
    assert sp.gate_shortfall(Gate(metric="a", min=0.9), None, 0.81) == pytest.approx(0.1)
    assert sp.gate_shortfall(Gate(metric="a", min_ratio=0.99), 1.0, 0.891) == pytest.approx(0.1)
    assert sp.gate_shortfall(Gate(metric="b", max=100.0), None, 150.0) == pytest.approx(0.5)
    assert sp.gate_shortfall(Gate(metric="p", max_ratio=1.05), 10.0, None) is None


def test_pareto_front_on_known_points():
    pts = {"a": [1.0, 5.0], "b": [2.0, 2.0], "c": [3.0, 3.0], "d": [5.0, 1.0], "e": [2.0, 2.0], "f": [1.0, 6.0]}
    assert sp.pareto_front(pts) == ["a", "b", "d", "e"]  # c is dominated by b; f by a; equal points both stay


def test_closest_miss_and_score_order():
    assert sp.closest_miss({1: [0.3, 0.0], 2: [0.05, 0.1], 3: [None, 0.0]}) == 2
    met, miss, unmeasured = sp.score([0.5, 1.1], [0.0, 0.0]), sp.score([0.2, 1.0], [0.01, 0.0]), sp.score(None, [None])
    assert met < miss < unmeasured  # a gate-meeting trial always beats a miss, however small
    assert sp.score([0.5, 1.0], [0, 0]) < sp.score([0.5, 1.1], [0, 0]) < sp.score([0.6, 0.9], [0, 0])  # lexicographic


def test_objectives_default_to_the_gates_and_direction_follows_the_metric():
    pb = pb_with({"steps[0].amount": [0.2, 0.4]})
    assert [o.metric for o in sp.objectives_of(pb)] == ["perplexity"]
    assert sp.Objective(metric="decode_tokens_per_s").sign() == -1.0
    assert sp.Objective(metric="stored_bytes").sign() == 1.0
    assert sp.objective_values([sp.Objective(metric="decode_tokens_per_s")], {"decode_tokens_per_s": 10.0},
                               {"decode_tokens_per_s": 20.0}) == [-2.0]


# ---------------------------------------------------------------- proposals

def _history(configs, scores):
    return [{"config": c, "status": "succeeded", "score": s} for c, s in zip(configs, scores)]


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_samplers_never_repeat_and_reproduce_from_the_same_history(strategy):
    pb = library()["int4-weight-only"]
    pb = pb.model_copy(update={"search": pb.search.model_copy(update={"strategy": strategy, "seed": 3})})
    hist: list[dict] = []
    seen = []
    for i in range(12):
        (config,) = search.propose(pb, hist, 1)
        assert config not in seen
        assert search.propose(pb, hist, 1) == [config]  # same history, same seed: same proposal
        seen.append(config)
        hist += _history([config], [float(i)])
    assert search.propose(pb, hist, 1) == []  # the 12-point space is exhausted
    assert len(search.propose(pb, [], 3)) == 3 and len({search._key(c) for c in search.propose(pb, [], 3)}) == 3


def test_pending_trials_are_not_proposed_again():
    pb = library()["int4-weight-only"]
    first = search.propose(pb, [], 2)
    pending = [{"config": c, "status": "running"} for c in first]
    nxt = search.propose(pb, pending, 10)
    assert len(nxt) == 10 and not {search._key(c) for c in first} & {search._key(c) for c in nxt}


# ---------------------------------------------------------------- a real search, in-process

@pytest.fixture
def tuned(migrated_sqlite):
    pb = pb_with({"steps[0].amount": [0.3, 0.6, 0.9]}, strategy="grid", max_trials=3)
    pb = parse_playbook({**pb.model_dump(), "expect": [{"metric": "perplexity", "max_ratio": 1.02}]})
    sid = search.start(pb, "tiny-llama", "cpu", dispatch="local")
    from jobs import pipeline

    return sid, search.run_local(sid, pipeline.execute_run)


def test_a_local_search_runs_every_trial_as_a_stored_run(tuned):
    sid, doc = tuned
    assert doc["status"] == "finished" and doc["reason"] == "ran its 3 trials"
    assert [t["trial"] for t in doc["trials"]] == [1, 2, 3]
    assert [t["config"]["steps[0].amount"] for t in doc["trials"]] == [0.3, 0.6, 0.9]
    assert all(t["status"] == "succeeded" for t in doc["trials"])
    from db import queries
    from db.session import session_scope

    with session_scope() as s:
        run = queries.get_run(s, doc["trials"][1]["run_id"])
        assert run.search_id == sid and run.steps[0].params["amount"] == 0.6
    ppl = [t["final"]["perplexity"] / t["baseline"]["perplexity"] for t in doc["trials"]]
    assert [t["objectives"][0] for t in doc["trials"]] == pytest.approx(ppl)
    # the answer is never empty: the best that meets the gate, or the closest miss with how far off
    pick = doc["best"] or doc["closest_miss"]
    assert pick is not None and pick["gates"][0]["metric"] == "perplexity"
    if doc["best"] is None:
        offs = [t["shortfalls"][0] for t in doc["trials"]]
        assert pick["gates"][0]["shortfall"] == min(offs) > 0
    assert set(doc["pareto"]) <= {t["run_id"] for t in doc["trials"]}


def test_a_finished_trial_saves_as_a_playbook_without_its_search(tuned):
    sid, doc = tuned
    run_id = doc["trials"][0]["run_id"]
    pb_id = search.save_trial_as_playbook(sid, run_id)
    from db.models import Playbook as Saved
    from db.session import session_scope
    from playbooks.schema import load_playbook_text

    with session_scope() as s:
        saved = load_playbook_text(s.get(Saved, pb_id).yaml_text)
    assert saved.search is None and saved.steps[0].params["amount"] == 0.3
    with pytest.raises(KeyError, match="not a trial of search"):
        search.save_trial_as_playbook(sid + 1000, run_id)


def test_dispatch_is_a_compare_and_set(migrated_sqlite):
    pb = pb_with({"steps[0].amount": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}, strategy="grid", max_trials=6, parallel=2)
    sent: list[int] = []
    lock = threading.Lock()

    def send(run_id, device):
        with lock:
            sent.append(run_id)

    from db.models import Search
    from db.session import session_scope

    with session_scope() as s:
        row = Search(team_id=1, playbook_name=pb.name, playbook_snapshot=pb.model_dump(), workload="tiny-llama", device="cpu")
        s.add(row)
        s.flush()
        sid = row.id
    threads = [threading.Thread(target=lambda: search.advance(sid, send=send)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sent) == 2 == len(search.trials(sid))  # four callers at once, two slots: two trials
    assert search.cancel(sid) == "cancel requested"
    assert {t["status"] for t in search.trials(sid)} == {"cancelled"}
    with session_scope() as s:
        assert s.get(Search, sid).status == "cancelled"


def test_a_playbook_without_a_search_section_is_refused_with_the_fix():
    with pytest.raises(PlaybookError, match="has no search: section"):
        search.merged_spec(parse_playbook(BASE))
