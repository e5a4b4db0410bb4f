"""Catalog: every technique of the taxonomy — key idea, papers, typical wins and trade-offs,
hardware needs — searchable and filtered by family, goal and status; an executable one shows its
evidence: the claim beside the figures Speedbook measured, with links to the runs."""
import streamlit as st

from db import evidence
from db.session import session_scope
from playbooks import catalog
from ui.format import md_escape
from ui.state import page_ready
from ui.team import current_team_id
from ui.tables import table

page_ready()
st.title("📖 Technique catalog")
entries = catalog.entries()
n_exec = sum(1 for e in entries if e.status == "executable")
st.caption(f"{len(entries)} techniques from the taxonomy; {n_exec} executable in Speedbook, the rest advice-only with the reason.")

c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
text = c1.text_input("Search", placeholder="e.g. 4-bit, KV cache, distillation")
family = c2.selectbox("Family", ["all"] + catalog.families())
goal = c3.selectbox("Goal", ["all", "train", "infer", "both"])
status = c4.selectbox("Status", ["all", "executable", "advice_only"])
found = catalog.search(text, family=None if family == "all" else family, goal=None if goal == "all" else goal,
                       status=None if status == "all" else status)
if not found:
    st.info("No technique matches; clear the search or the filters.")
    st.stop()

with st.expander("Evidence table (from the taxonomy)"):
    table(catalog.evidence_table())
    st.caption("What Speedbook measured against these claims: the **Evidence** page.")

RUN_LINKS = 8  # the newest runs linked per workload


def evidence_section(ev: evidence.TechniqueEvidence, team: str | None) -> None:
    """The claim beside what the team's stored runs measured (computed from their figures), per workload."""
    st.markdown("**Evidence** (measured in Speedbook, ratios computed from the stored figures)")
    if not ev.groups:
        st.caption("No stored run has this step yet: run a playbook with it to measure the claim.")
        return
    for g in ev.groups:
        links = " ".join(f"[run {r}]({evidence.run_url(r, team)})" for r in g.run_ids[:RUN_LINKS])
        n = len(g.run_ids)
        st.markdown(f"{md_escape(g.workload)} on {g.device} ({g.scenario}) · {n} run{'s' * (n != 1)}, latest "
                    f"{g.latest:%Y-%m-%d} on {md_escape(g.machines[0])} · {links}")
        st.caption(" · ".join(md_escape(f.text()) for f in evidence.headline(g, ev.entry)))
        st.markdown("\n".join(f"- {md_escape(evidence.verdict_line(v))}" for v in g.verdicts))


with session_scope() as s:
    measured = {ev.technique: ev for ev in evidence.evidence(
        s, current_team_id(), [e.technique for e in found if e.status == "executable" and e.technique])}
team = st.query_params.get("team") or st.session_state.get("team")  # links keep the team (?team=slug)

for e in found:
    badge = f"✅ executable → `{e.technique}`" if e.status == "executable" else "📝 advice-only"
    with st.expander(f"{e.name} — {e.family} · {e.goal} · {'executable' if e.status == 'executable' else 'advice-only'}"):
        st.markdown(badge)
        st.write(e.key_idea)
        if e.status != "executable" and e.reason:
            st.caption(f"Why advice-only: {e.reason}")
        cols = st.columns(2)
        cols[0].markdown("**Papers**\n" + "\n".join(f"- {md_escape(p)}" for p in e.papers))
        if e.follow_ups:
            cols[1].markdown("**Follow-ups**\n" + "\n".join(f"- {md_escape(p)}" for p in e.follow_ups))
        if e.typical_wins:
            st.markdown(f"**Typical wins:** {md_escape(e.typical_wins)}")
        if e.tradeoffs:
            st.markdown(f"**Trade-offs:** {md_escape(e.tradeoffs)}")
        if e.technique in measured:
            evidence_section(measured[e.technique], team)
