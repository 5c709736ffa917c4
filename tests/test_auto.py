"""n_cores="auto": the label-free budget split (bilaf_core.auto), hand-checked, as a
property, and as the default of select(), the estimator and the command line."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bilaf_core import BiLAF, select
from bilaf_core.auto import LOW_BUDGET_POOL_PER_LABEL, CoreSplit, auto_n_cores
from bilaf_core.cli import main


@pytest.mark.parametrize("n,budget,k", [
    (50_000, 250, 250),     # CIFAR-10 0.5 %: low budget, every label a core
    (50_000, 1_000, 1_000),  # 2 %: still low (N / B = 50)
    (50_000, 1_001, 32),     # just above: round(sqrt(1001)) = 32
    (50_000, 2_500, 50),     # 5 %: the paper's CIFAR-10 K
    (1_797, 90, 9),          # the app's digits default (5 %)
    (1_797, 35, 35),         # 1797 / 35 >= 50
    (10, 10, 3),             # the whole pool: round(sqrt(10))
    (1, 1, 1),
])
def test_auto_n_cores_hand_checked(n, budget, k):
    split = auto_n_cores(n, budget)
    assert split.n_cores == k
    assert split.reason.startswith("auto: ") and f"{LOW_BUDGET_POOL_PER_LABEL}" in split.reason


@given(st.integers(1, 2_000_000), st.data())
def test_auto_n_cores_is_between_one_and_the_budget_and_never_shrinks_within_a_regime(n, data):
    budget = data.draw(st.integers(1, n))
    k = auto_n_cores(n, budget).n_cores
    assert 1 <= k <= budget
    if budget < n:  # one more label never takes a core away, except where the regime changes
        crossing = budget * LOW_BUDGET_POOL_PER_LABEL <= n < (budget + 1) * LOW_BUDGET_POOL_PER_LABEL
        assert auto_n_cores(n, budget + 1).n_cores >= k or crossing


def test_select_and_the_estimator_default_to_auto_and_record_why():
    features = np.random.default_rng(0).standard_normal((600, 6)).astype(np.float32)
    low = select(features, 12, core_method="kmeans", random_state=0)  # 600 / 12 = 50: low budget
    assert low.params["n_cores"] == 12 and low.cores.size == 12 and low.params["n_cores_rule"].startswith("auto")
    assert set(low.indices) == set(low.cores)  # every label a core
    high = select(features, 100, core_method="kmeans", random_state=0)
    assert high.params["n_cores"] == 10 and np.unique(high.indices).size == 100
    assert BiLAF(100, core_method="kmeans", random_state=0).fit(features).cores_.size == 10
    paper = select(features, 100, n_cores=None, core_method="kmeans", random_state=0)  # the paper's 0.5 % of N
    assert paper.params["n_cores"] == 3 and "0.5 %" in paper.params["n_cores_rule"]
    assert select(features, 100, n_cores=7, core_method="kmeans", random_state=0).params["n_cores_rule"] == "set by hand"


def test_cli_n_cores_auto_is_the_default_and_bad_values_are_named(tmp_path, capsys):
    path = tmp_path / "f.npy"
    np.save(path, np.random.default_rng(1).standard_normal((300, 5)).astype(np.float32))
    out = tmp_path / "sel.json"
    base = ["select", "--features", str(path), "--budget", "60", "--out", str(out), "--store", str(tmp_path / "s.db"),
            "--core-method", "kmeans", "--seed", "0"]
    assert main(base) == 0
    assert "K = 8 (auto: K = round(sqrt(B))" in capsys.readouterr().err
    assert json.loads(out.read_text())["params"]["n_cores"] == 8
    assert main(base + ["--n-cores", "5"]) == 0 and json.loads(out.read_text())["params"]["n_cores"] == 5
    capsys.readouterr()
    assert main(base + ["--n-cores", "many"]) == 2
    assert "expected an integer or 'auto', got 'many'" in capsys.readouterr().err


def test_a_budget_of_one_says_why_k_is_one_whatever_asked_for_it():
    """A one-sample pool read "K = 1 (set by hand)" in the app though nobody set K."""
    from bilaf_core.selection import resolve_n_cores

    assert resolve_n_cores("auto", 1, 1) == CoreSplit(1, "the pool has a single sample")
    assert resolve_n_cores(1, 100, 1) == CoreSplit(1, "a budget of one sample has one core")
    assert resolve_n_cores(None, 100, 1).reason == "a budget of one sample has one core"
    with pytest.raises(ValueError):
        resolve_n_cores(2, 100, 1)  # still checked


def test_at_k_equal_to_b_stage_2_does_not_run_and_removes_nothing():
    """At K = B (auto's low budgets) every label is a core: the Select page still said
    "Removed 5,226" and charted per-cluster budgets that played no part in the selection.
    Stage 2 has no label to spend there: it does not denoise, and the selection says so."""
    features = np.random.default_rng(0).standard_normal((600, 6)).astype(np.float32)
    low = select(features, 12, core_method="kmeans", random_state=0)  # K = B = 12
    assert not low.has_stage2 and low.removed.size == 0 and "removed" not in low.role_counts()
    assert low.role_counts() == {"core": 12, "unselected": 588}
    denoised = select(features, 12, core_method="kmeans", random_state=0, n_cores=11)  # K < B: stage 2 runs
    assert denoised.has_stage2 and denoised.removed.size > 0
    assert not select(features, 12, method="kmeans", random_state=0).has_stage2  # a whole-budget method has none
