"""YAML from users (playbooks, constraints) behind two limits checked before any Python object is
built: the size of the text, and the size it expands to — a 453-byte "billion laughs" document of
nested aliases composes to a few shared nodes but expands to gigabytes once its objects are
walked (validation, JSON dumps, the database)."""
from __future__ import annotations

from typing import Any

import yaml

MAX_YAML_BYTES = 256 * 1024  # the largest library playbook is ~3 KiB
MAX_EXPANDED_NODES = 100_000  # the largest library playbook expands to a few hundred


def expanded_nodes(node: yaml.Node, memo: dict[int, int] | None = None) -> int:
    """How many nodes ``node`` stands for with every alias expanded (shared nodes counted once
    per use), computed on the composed graph in time linear in its size."""
    memo = {} if memo is None else memo
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 0  # a recursive anchor adds nothing more
    if isinstance(node, yaml.SequenceNode):
        n = 1 + sum(expanded_nodes(c, memo) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        n = 1 + sum(expanded_nodes(k, memo) + expanded_nodes(v, memo) for k, v in node.value)
    else:
        n = 1
    memo[key] = n
    return n


def yaml_problem(what: str, err: yaml.YAMLError) -> str:
    """The parser's complaint as a person reads it: the line and column (1-based), then what was
    wrong ("mapping values are not allowed here"), without the parser's internal framing."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context, cmark = getattr(err, "context", None), getattr(err, "context_mark", None)
    hint = f" ({context} that starts at line {cmark.line + 1}, column {cmark.column + 1})" if context and cmark else ""
    return f"malformed {what} YAML, {where}{problem}{hint}"


def safe_yaml(text: str, what: str, error: type[ValueError]) -> Any:
    """``yaml.safe_load(text)``, or ``error`` naming the limit that was crossed."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_YAML_BYTES:
        raise error(f"{what} YAML is {size:,} bytes; the limit is {MAX_YAML_BYTES:,} bytes")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            n = expanded_nodes(root)
            if n > MAX_EXPANDED_NODES:
                raise error(f"{what} YAML expands to {n:,} values through its aliases (*name); "
                            f"the limit is {MAX_EXPANDED_NODES:,}")
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise error(yaml_problem(what, err)) from None
    except RecursionError:
        raise error(f"{what} YAML is nested too deeply") from None
