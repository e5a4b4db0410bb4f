"""Every table on every page drawn one way: no index column, and a missing value shown as "—"
(Streamlit's own default draws "None"), so number columns stay numbers and still sort."""
from __future__ import annotations

from typing import Any

import streamlit as st

from ui.format import MISSING


def table(data: Any, **kw: Any) -> Any:
    """``st.dataframe`` with the house defaults; returns its selection event where one is asked for."""
    return st.dataframe(data, **{"hide_index": True, "placeholder": MISSING, **kw})
