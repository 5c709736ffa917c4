"""The browser tests' own helpers (tests/browser.py)."""

from pathlib import Path

from browser import streamlit_server


def test_a_module_scoped_server_records_runs_in_its_own_store_not_the_users(tmp_path, monkeypatch):
    """test_journeys' server is module-scoped: it started before conftest's per-test
    BILAF_STORE was set, so its Finetune runs went to ~/.local/share/bilaf-studio."""
    monkeypatch.delenv("BILAF_STORE", raising=False)  # as when a module-scoped fixture starts
    with streamlit_server(tmp_path / "cache", tmp_path / "log") as url:
        environ = dict(item.split("=", 1) for item in
                       Path(f"/proc/{url.pid}/environ").read_bytes().decode().split("\0") if "=" in item)
    assert environ.get("BILAF_STORE", "").startswith(str(tmp_path)), environ.get("BILAF_STORE")
