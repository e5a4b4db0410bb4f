"""Starts the Streamlit server with v2 navigation from the first request. Streamlit decides
once per process whether a ``pages/`` folder beside the entry means its legacy multipage mode
(deep links run page files directly); Speedbook routes only through ``st.navigation`` in
``app.py``, so the launcher settles that choice before any session exists. Every page also
guards itself (``ui.state.page_ready``), so ``streamlit run app.py`` stays safe too."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import alembic.command  # noqa: F401  what the first page imports (the migration check, the models):
    import sqlalchemy.orm  # noqa: F401   loaded here, before the server listens, not on the first visit

    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    PagesManager.uses_pages_directory = False
    sys.argv = ["streamlit", *(sys.argv[1:] if argv is None else argv)]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
