"""How a run ended, said first: a missed gate as loudly as a failure, and a run in which no step
executed as "nothing executed here" with each step's reason, never as a plain success."""
from __future__ import annotations

from typing import Any

import streamlit as st

from ui.format import md_escape


def outcome_banner(summary: dict[str, Any]) -> None:
    if summary["status"] != "succeeded":
        return  # a failed, cancelled or timed-out run shows its error
    if not summary.get("executed", True):
        reasons = [f"{s['technique']}: {(s.get('verdict') or {}).get('reason') or s['status']}" for s in summary["steps"]]
        st.warning("**Nothing executed here.** Every step is advice-only or cannot run on this target, so the "
                   "figures below are the baseline only.  \n" + "  \n".join(md_escape(r) for r in reasons))
    gates = summary.get("gates") or []
    details = "  \n".join(md_escape(("✅ " if g["ok"] else "—  " if g["ok"] is None else "❌ ") + g["detail"]) for g in gates)
    verdict = summary.get("gates_verdict", "not checked")
    if verdict == "missed":
        st.error("**Gates missed.** The run executed, but its result misses the playbook's goals:  \n" + details)
    elif verdict == "passed":
        st.success("**Every gate passed.**  \n" + details)
    elif gates:
        st.info("**Gates not checked** (a metric this run did not measure):  \n" + details)
