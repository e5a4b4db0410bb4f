"""Optional sign-in through Streamlit's OIDC ``st.login``: enabled when ``[auth]`` is configured
in ``.streamlit/secrets.toml`` (see the README); local use needs none."""
from __future__ import annotations

import streamlit as st


def auth_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all
        return False


def require_login() -> None:
    if not auth_configured():
        return
    if not st.user.is_logged_in:
        st.title("⚡ Speedbook")
        st.write("Sign in to see your team's playbooks and runs.")
        st.button("Sign in", on_click=st.login, type="primary")
        st.stop()
    st.sidebar.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'user'}")
    st.sidebar.button("Sign out", on_click=st.logout)
