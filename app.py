"""Speedbook's Streamlit entry: routes with st.navigation, nothing else. A share link
(/?share=TOKEN) opens only the read-only shared view; a signed-out visitor (when ``[auth]``
is configured) gets a sign-in-only navigation, so no page URL reaches a page."""
import streamlit as st

from ui.auth import account_sidebar, sign_in_page, signed_in
from ui.state import db_ready

st.set_page_config(page_title="Speedbook", page_icon="⚡", layout="wide")

if "share" in st.query_params:
    from ui import shared_view

    db_ready()
    token = st.query_params.get("share")
    st.navigation([st.Page(lambda: shared_view.render(token), title="Shared playbook", url_path="shared")], position="hidden").run()
    st.stop()

if not signed_in():
    st.navigation([st.Page(sign_in_page, title="Sign in", url_path="sign-in", default=True)], position="hidden").run()
    st.stop()

db_ready()
account_sidebar()
from ui.team import team_selector  # noqa: E402

team_selector()
PAGES = {
    "Optimize": [
        st.Page("pages/home.py", title="Home", icon="⚡", url_path="home", default=True),
        st.Page("pages/guide.py", title="Guide", icon="🧭", url_path="guide"),
        st.Page("pages/new_run.py", title="New run", icon="🚀", url_path="new-run"),
        st.Page("pages/search.py", title="Search", icon="🎯", url_path="search"),
        st.Page("pages/catalog.py", title="Catalog", icon="📖", url_path="catalog"),
        st.Page("pages/kernel_lab.py", title="Kernel lab", icon="🧪", url_path="kernel-lab"),
    ],
    "Results": [
        st.Page("pages/dashboard.py", title="Dashboard", icon="📊", url_path="dashboard"),
        st.Page("pages/runs.py", title="Runs", icon="📋", url_path="runs"),
        st.Page("pages/run.py", title="Run", icon="🔎", url_path="run"),
        st.Page("pages/compare.py", title="Compare", icon="⚖️", url_path="compare"),
        st.Page("pages/playbooks.py", title="Saved playbooks", icon="📚", url_path="playbooks"),
        st.Page("pages/evidence.py", title="Evidence", icon="🧾", url_path="evidence"),
    ],
}
st.navigation(PAGES).run()
