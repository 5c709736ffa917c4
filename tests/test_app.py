"""Page-level tests of the app with streamlit.testing.v1.AppTest (offline default)."""

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _run():
    return AppTest.from_file(APP, default_timeout=120).run()


def test_select_page_runs_on_the_default_and_selects_the_budget():
    at = _run()
    assert not at.exception
    assert not at.error
    selection = at.session_state["selection"]
    assert selection.indices.size == at.number_input(key="budget").value
    assert np.unique(selection.indices).size == selection.indices.size


def test_stage2_slider_change_updates_the_selection():
    at = _run()
    before = at.session_state["selection"]
    at.slider(key="removal_ratio").set_value(0.4)
    at.button[0].click().run()  # the form's submit button
    after = at.session_state["selection"]
    assert not at.exception
    assert after.params["removal_ratio"] == 0.4
    assert after.removed.size > before.removed.size
    np.testing.assert_array_equal(after.cores, before.cores)  # stage 1 reused


def test_budget_below_k_shows_an_error_not_a_traceback():
    at = _run()
    at.number_input(key="budget").set_value(5)
    at.slider(key="n_cores").set_value(20)
    at.button[0].click().run()
    assert not at.exception
    assert any("budget must be at least n_cores" in e.value for e in at.error)
