"""AppTest for the Guide wizard (to a recommendation, Save, Run this playbook) and the Catalog."""
from __future__ import annotations

from db import queries
from db.session import session_scope


def _walk_to_recommendations(at):
    for _ in range(3):
        next(b for b in at.button if b.label == "Next").click().run()
    next(b for b in at.button if b.label == "Recommend").click().run()
    return at


def test_guide_walks_to_ranked_playbooks(page):
    at = page("guide.py")
    assert not at.exception
    assert "Step 1 of 4" in at.get("progress")[0].proto.text
    at = _walk_to_recommendations(at)
    assert not at.exception
    assert at.subheader[0].value.startswith("1. ")
    steps = at.dataframe[0].value
    assert {"technique", "verdict"} <= set(steps.columns)
    assert len(at.get("plotly_chart")) >= 1


def test_guide_save_and_hand_over(page):
    at = _walk_to_recommendations(page("guide.py"))
    with session_scope() as s:
        before = len(queries.saved_playbooks(s))
    next(b for b in at.button if b.key == "save_1").click().run()
    assert not at.exception
    with session_scope() as s:
        saved = queries.saved_playbooks(s)
        assert len(saved) == before + 1 and saved[0].origin == "guide"
    next(b for b in at.button if b.key == "run_1").click().run()
    assert not at.exception
    assert at.title[0].value.endswith("New run")
    assert at.radio[0].value == "Handed over"
    assert "steps:" in at.text_area[0].value


def test_guide_tune_this_hands_the_playbook_to_the_search_page(page):
    at = _walk_to_recommendations(page("guide.py"))
    next(b for b in at.button if b.key == "tune_1").click().run()
    assert not at.exception
    assert at.title[0].value.endswith("Search")
    assert at.radio[0].value == "From the Guide"
    assert any(c.value.startswith("From the Guide: ") for c in at.caption)
    assert any(t.label.endswith("values to try") for t in at.text_input) or at.dataframe  # mark parameters, or its space


def test_guide_takes_a_custom_model_by_its_shapes_and_names_a_bad_field(page):
    at = page("guide.py")
    next(b for b in at.button if b.label == "Next").click().run()
    at.radio(key="g_model_how").set_value("Describe its shapes").run()
    at.number_input(key="g_c_heads").set_value(30).run()  # 4096 is not a multiple of 30
    assert any("hidden=4096 must be a multiple of heads=30" in e.value.replace("\\", "") for e in at.error)
    at.number_input(key="g_c_heads").set_value(32).run()
    at.number_input(key="g_c_params").set_value(3.0).run()
    assert not at.error
    for _ in range(2):
        next(b for b in at.button if b.label == "Next").click().run()
    next(b for b in at.button if b.label == "Recommend").click().run()
    assert not at.exception and not at.error
    assert at.subheader and at.subheader[0].value.startswith("1. ")


def test_guide_cpu_edge_recommendation(page):
    at = page("guide.py")
    at.radio[0].set_value("edge").run()
    next(b for b in at.button if b.label == "Next").click().run()
    at.selectbox[-1].set_value("MobileNetV2").run()
    next(b for b in at.button if b.label == "Next").click().run()
    at.selectbox[-1].set_value("CPU").run()
    next(b for b in at.button if b.label == "Next").click().run()
    next(b for b in at.button if b.label == "Recommend").click().run()
    assert not at.exception
    assert at.subheader and at.subheader[0].value.startswith("1. ")


def test_catalog_search_and_filters(page):
    at = page("catalog.py")
    assert not at.exception
    total = len(at.expander)
    assert total > 100
    at.text_input[0].set_value("GPTQ").run()
    assert any("GPTQ" in e.label for e in at.expander)
    at.text_input[0].set_value("").run()
    at.selectbox[2].set_value("executable").run()
    assert 0 < len(at.expander) - 1 < total  # minus the evidence-table expander
    at.text_input[0].set_value("zzzz-nothing").run()
    assert "No technique matches" in at.info[0].value


def test_guide_asks_sequence_figures_only_where_the_goal_uses_them(page):
    at = page("guide.py")
    at.radio[0].set_value("edge").run()
    next(b for b in at.button if b.label == "Next").click().run()
    at.selectbox[-1].set_value("MobileNetV2").run()
    next(b for b in at.button if b.label == "Next").click().run()
    next(b for b in at.button if b.label == "Next").click().run()
    assert not at.number_input  # an edge CNN: no context length, no concurrency
    next(b for b in at.button if b.label == "Recommend").click().run()
    assert not at.exception
    assert any(c.value.startswith("The estimate assumes") and "token" not in c.value for c in at.caption)
    llm = _walk_to_recommendations(page("guide.py"))  # the default: serving an LLM asks both and says them
    assert any("concurrent requests" in c.value and "token context" in c.value for c in llm.caption)
