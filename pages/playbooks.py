"""Saved playbooks of the team: import and export YAML, share read-only links, revoke them."""
import streamlit as st

from db import queries, sharing
from db.session import session_scope
from playbooks.schema import load_playbook_text
from ui.format import STATUS_ICON, md_escape, user_error
from ui.state import page_ready
from ui.team import current_team_id

page_ready()
st.title("📚 Saved playbooks")
team_id = current_team_id()

with st.expander("Import a playbook (YAML)"):
    text = st.text_area("Playbook YAML", height=200, key="import_yaml")
    upload = st.file_uploader("…or a .yaml file", type=["yaml", "yml"])
    if upload is not None:
        text = upload.getvalue().decode("utf-8", errors="replace")
    if st.button("Save playbook", disabled=not text.strip()):
        try:
            pb = load_playbook_text(text)
        except ValueError as err:
            st.error(f"Not saved: {user_error(err)}")
        else:
            try:
                with session_scope() as s:
                    queries.save_playbook(s, name=pb.name, title=pb.title, yaml_text=pb.to_yaml(), team_id=team_id,
                                          origin="import")
            except Exception as err:  # the database refused it: no SQL on the page
                st.error(f"Not saved: {user_error(err)}")
            else:
                st.success(f"Saved {pb.name}.")

def share_url(token: str) -> str:
    """The whole link: this app's address (as the browser reached it) with the share token."""
    base = (st.context.url or "").split("?", 1)[0].rstrip("/")
    base = base.rsplit("/", 1)[0] if base.endswith("/playbooks") else base
    return f"{base}/?share={token}"


with session_scope() as s:
    saved = [(p.id, p.name, p.title, p.yaml_text, p.origin, p.created_at) for p in queries.saved_playbooks(s, team_id)]
if not saved:
    st.info("No saved playbooks yet. Save one from the **Guide**, or import YAML above.")
    st.stop()

for pid, name, title, yaml_text, origin, created in saved:
    with st.container(border=True):
        st.markdown(f"**{md_escape(title)}** · `{md_escape(name)}` · {origin} · {created:%Y-%m-%d %H:%M}")
        c1, c2, c3 = st.columns(3)
        c1.download_button("Export YAML", yaml_text, file_name=f"{name}.yaml", key=f"dl{pid}")
        if c2.button("Run it", key=f"run{pid}"):
            st.session_state["handoff_playbook"] = yaml_text
            st.session_state["handoff_playbook_id"] = pid
            st.switch_page("pages/new_run.py")
        if c3.button("Share", key=f"share{pid}"):
            with session_scope() as s:
                token = sharing.create_link(s, pid)
            st.session_state[f"token{pid}"] = token
        if st.session_state.get(f"token{pid}"):
            st.caption("Anyone with this link sees the playbook and its runs, read-only. It is shown once; copy it now "
                       "(the copy button is at the right of the link).")
            st.code(share_url(st.session_state[f"token{pid}"]), language=None)
        with st.expander("YAML and share links"):
            st.code(yaml_text, language="yaml")
            with session_scope() as s:
                links = [(ln.id, ln.created_at, ln.revoked_at) for ln in sharing.links_for(s, pid)]
                runs = [(r.id, r.status, r.workload) for r in queries.runs_of_playbook(s, pid)]
            for lid, made, revoked in links:
                cols = st.columns([3, 1])
                cols[0].text(f"link #{lid} made {made:%Y-%m-%d %H:%M} — {'revoked ' + f'{revoked:%Y-%m-%d %H:%M}' if revoked else 'live'}")
                if not revoked and cols[1].button("Revoke", key=f"revoke{lid}"):
                    st.session_state[f"confirm{lid}"] = True
                if st.session_state.get(f"confirm{lid}") and not revoked:
                    st.warning(f"Revoke link #{lid}? Whoever holds it loses access; this cannot be undone.")
                    yes, no = st.columns(2)
                    if yes.button("Yes, revoke it", key=f"yes{lid}", type="primary"):
                        with session_scope() as s:
                            sharing.revoke(s, lid)
                        st.session_state.pop(f"confirm{lid}", None)
                        st.rerun()
                    if no.button("Keep it", key=f"no{lid}"):
                        st.session_state.pop(f"confirm{lid}", None)
                        st.rerun()
            for rid, status, wl in runs:
                st.text(f"{STATUS_ICON.get(status, '')} run {rid} on {wl}: {status}")
