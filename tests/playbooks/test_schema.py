"""Playbook schema: bad input is refused with a message naming the field."""
import pytest

from playbooks.errors import PlaybookError
from playbooks.schema import Playbook, load_playbook_text, parse_playbook

GOOD = {"name": "p1", "title": "P", "steps": [{"technique": "int8_dynamic", "params": {"include_lm_head": True}}]}


def test_good_playbook_round_trips():
    pb = parse_playbook(GOOD)
    again = load_playbook_text(pb.to_yaml())
    assert again == pb


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({**GOOD, "steps": [{"technique": "int9_magic"}]}, "unknown technique 'int9_magic'"),
        ({**GOOD, "steps": [{"technique": "int8_dynamic", "params": {"bits": 3}}]}, "steps[0] (int8_dynamic).params.bits"),
        ({**GOOD, "steps": [{"technique": "int8_dynamic", "params": {"per_channel": "maybe"}}]}, "params.per_channel"),
        ({**GOOD, "colour": "red"}, "colour"),
        ({**GOOD, "steps": []}, "steps"),
        ({"title": "no name", "steps": GOOD["steps"]}, "name"),
        ({**GOOD, "expect": [{"metric": "perplexity"}]}, "needs one of max_ratio"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_playbooks_name_the_field(data, fragment):
    with pytest.raises(PlaybookError) as err:
        parse_playbook(data)
    assert fragment in str(err.value)


def test_malformed_yaml():
    with pytest.raises(PlaybookError, match=r"malformed playbook YAML, line \d+, column \d+: "):
        load_playbook_text("name: [unclosed")


def test_gate_check():
    pb = Playbook.model_validate({**GOOD, "expect": [{"metric": "perplexity", "max_ratio": 1.02}]})
    gate = pb.expect[0]
    assert gate.check(10.0, 10.1)[0] is True
    ok, detail = gate.check(10.0, 10.5)
    assert not ok and "1.05" in detail
    assert gate.check(10.0, None)[0] is None  # not measured is neither met nor missed


def test_one_name_everywhere_for_executable_catalog_entries():
    """An executable catalog entry's id is its registered technique's name, so a playbook step
    naming the catalog id runs that technique (module name = registry key = YAML value)."""
    from playbooks import catalog

    mismatched = [(e.id, e.technique) for e in catalog.entries() if e.status == "executable" and e.id != e.technique]
    assert not mismatched


def test_yaml_errors_name_the_line_not_the_parser():
    with pytest.raises(PlaybookError) as err:
        load_playbook_text("name: x\ntitle: y\nsteps:\n  - technique: int8_dynamic\n    params: {bits: 3\n")
    msg = str(err.value)
    assert "flow mapping that starts at line 5, column 13" in msg and "<unicode string>" not in msg
