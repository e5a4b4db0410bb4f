"""Speedbook's Streamlit entry: routes with st.navigation, nothing else."""
import streamlit as st

st.set_page_config(page_title="Speedbook", page_icon="⚡", layout="wide")

PAGES = {
    "Optimize": [
        st.Page("pages/new_run.py", title="New run", icon="🚀", url_path="new-run", default=True),
    ],
    "Results": [
        st.Page("pages/runs.py", title="Runs", icon="📋", url_path="runs"),
        st.Page("pages/run.py", title="Run", icon="🔎", url_path="run"),
    ],
}

st.navigation(PAGES).run()
