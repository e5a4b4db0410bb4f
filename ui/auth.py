"""Optional sign-in through Streamlit's OIDC ``st.login``: enabled when ``[auth]`` is configured
in ``.streamlit/secrets.toml`` (see the README); local use needs none.

Sign-in cannot be skipped: ``app.py`` routes a signed-out visitor to a sign-in-only navigation,
and every page file calls :func:`guard` (through ``ui.state.page_ready``) before it renders
anything, because Streamlit's legacy multipage mode (a ``pages/`` folder beside the entry) runs
a deep-linked page file directly, without ``app.py``, until the first ``st.navigation`` call."""
from __future__ import annotations

import streamlit as st


def auth_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all
        return False


def signed_in() -> bool:
    """True when no sign-in is configured, or the visitor has signed in."""
    return not auth_configured() or bool(st.user.is_logged_in)


def sign_in_page() -> None:
    st.title("⚡ Speedbook")
    st.write("Sign in to see your team's playbooks and runs.")
    st.button("Sign in", on_click=st.login, type="primary")


def guard() -> None:
    """Stop the script run of a signed-out visitor after showing the sign-in prompt."""
    if not signed_in():
        sign_in_page()
        st.stop()


def account_sidebar() -> None:
    if auth_configured():
        st.sidebar.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'user'}")
        st.sidebar.button("Sign out", on_click=st.logout)
