"""Catalog: every technique of the taxonomy — key idea, papers, typical wins and trade-offs,
hardware needs — searchable and filtered by family, goal and status."""
import streamlit as st

from playbooks import catalog
from ui.format import md_escape
from ui.state import page_ready

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
    st.dataframe(catalog.evidence_table(), hide_index=True)

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
