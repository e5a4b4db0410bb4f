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


def headline_cards(summary: dict[str, Any]) -> None:
    """The final result against the baseline as cards: stored bytes against a 16-bit copy, the task
    quality, the speed with its interleaved interval and verdict, and the fidelity to the baseline's
    outputs. A change for the worse is red, never green (delta colours follow each metric's direction)."""
    from optimizers import stats
    from optimizers.metrics import spec
    from ui.format import delta_text, fmt_value

    base, final = summary.get("baseline") or {}, summary.get("final") or {}
    if not final:
        return
    cards: list[tuple[str, str, str | None, str]] = []  # (label, value, delta, delta_color)
    if final.get("stored_bytes_vs_16bit") is not None:
        cards.append(("stored bytes vs a 16-bit copy", f"×{final['stored_bytes_vs_16bit']:.2f}",
                      delta_text("stored_bytes", base.get("stored_bytes"), final.get("stored_bytes"), 1) or None, "inverse"))
    q = next((n for n in ("perplexity", "accuracy", "pair_spearman", "answer_accuracy") if n in final), None)
    if q:
        cards.append((spec(q).label, fmt_value(q, final[q]), delta_text(q, base.get(q), final[q], 1) or None,
                      "inverse" if spec(q).better == "lower" else "normal"))
    for name in ("decode_tokens_per_s", "latency_ms"):
        iv = stats.stored_interval(final, name)
        if iv is not None:
            rate = spec(name).better == "higher"
            faster = (iv.low > 1) if rate else (iv.high < 1)
            slower = (iv.high < 1) if rate else (iv.low > 1)
            verdict = "faster" if faster else "slower" if slower else "no significant change"
            cards.append((f"{spec(name).label} vs baseline (95 % interval)", iv.text(), verdict,
                          "normal" if faster else "inverse" if slower else "off"))
            break
    if "top1_agreement" in final:
        cards.append(("top-1 agreement with the baseline", f"{final['top1_agreement']:.3f}",
                      f"KL {final['kl_divergence']:.3g}" if "kl_divergence" in final else None, "off"))
    elif "embedding_cosine" in final:
        cards.append(("embedding cosine to the baseline", f"{final['embedding_cosine']:.4f}", None, "off"))
    for col, (label, value, delta, colour) in zip(st.columns(max(len(cards), 1)), cards):
        col.metric(label, value, delta, delta_color=colour)
