"""Which label-free diagnostic tells a user, without labels, which setting is likely to
train better -- as measured, not as assumed.

``benchmarks/selection_quality.py --guidance bilaf_core/guidance.json`` writes, per data
set and budget, the Spearman rank correlation between every diagnostic of
:func:`bilaf_core.metrics.selection_diagnostics` and the linear probe's top-1, over every
selection the benchmark made at that budget (methods x seeds x settings).
:func:`guidance` reads it: a diagnostic is named as a predictor at a budget only if its
correlation has the same sign and at least :data:`USEFUL_RHO` in size on every data set
measured; otherwise the answer says that none predicts well.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GUIDANCE_FILE", "USEFUL_RHO", "DIAGNOSTIC_NAMES", "Guidance", "guidance", "load_measurements", "pool_share"]

GUIDANCE_FILE = Path(__file__).with_name("guidance.json")
#: |Spearman rho| from which a diagnostic counts as predicting accuracy.
USEFUL_RHO = 0.5
#: A measurement speaks for budgets within this factor of the one it was made at.
MAX_BUDGET_RATIO = 2.0
#: Display names, and whether lower values are better.
DIAGNOSTIC_NAMES = {  # one per bilaf_core.metrics.LABEL_FREE
    "emd_proxy": ("EMD proxy", True),
    "coverage": ("coverage", False),
    "budget_coverage": ("coverage at the budget's radius", False),
    "typicality": ("typicality", False),
    "pseudo_class_kl": ("pseudo-class KL", True),
}


@dataclass(frozen=True)
class Guidance:
    """The measured answer for one budget.

    Attributes
    ----------
    diagnostic : key of :data:`DIAGNOSTIC_NAMES`, or None where none predicts well.
    rho : {data set: rho} of that diagnostic (of the best one where none qualifies).
    budget_percent : the measured budget (% of the pool) nearest to the one asked about.
    message : one sentence for the app's help text.
    """

    diagnostic: str | None
    rho: dict
    budget_percent: float
    message: str


def load_measurements(path: str | Path = GUIDANCE_FILE) -> dict:
    """{data set: {budget percent (str): {diagnostic: {"rho": float, "n": int}}}}; empty
    when nothing was measured yet."""
    file = Path(path)
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}


def pool_share(fraction: float) -> str:
    """A share of the pool as the library and the app write it: three significant digits
    and a spaced percent sign, "5 %", "0.0556 %", "33.4 %"."""
    return f"{100 * fraction:.3g} %"


def guidance(budget_fraction: float, *, measurements: dict | None = None) -> Guidance | None:
    """The diagnostic that predicted linear-probe accuracy at the measured budget nearest
    (on a log scale) to ``budget_fraction`` (B / N), or why none did. None when nothing
    was measured."""
    data = load_measurements() if measurements is None else measurements
    percents = sorted({float(p) for per_budget in data.values() for p in per_budget})
    if not percents or budget_fraction <= 0:
        return None
    wanted = 100 * budget_fraction
    nearest = min(percents, key=lambda p: abs(math.log(p / wanted)))
    if abs(math.log(nearest / wanted)) > math.log(MAX_BUDGET_RATIO):
        return Guidance(None, {}, nearest, (
            f"No benchmark measured how well the label-free diagnostics predict accuracy near {pool_share(budget_fraction)} of the "
            f"pool (measured at {', '.join(f'{p:g}' for p in percents)} %): read them as a description of the "
            "selection, not as a ranking of settings."))
    table = {name: per_budget[key] for name, per_budget in data.items()
             for key in per_budget if float(key) == nearest}
    scores = {}
    for diagnostic in DIAGNOSTIC_NAMES:
        rhos = {name: row[diagnostic]["rho"] for name, row in table.items() if diagnostic in row}
        if rhos:
            same_sign = len({math.copysign(1, r) for r in rhos.values()}) == 1
            scores[diagnostic] = (min(abs(r) for r in rhos.values()) if same_sign else 0.0, rhos)
    if not scores:
        return None
    best = max(scores, key=lambda d: scores[d][0])
    strength, rhos = scores[best]
    name, lower_better = DIAGNOSTIC_NAMES[best]
    measured = ", ".join(f"{r:+.2f} on {data_set}" for data_set, r in rhos.items())
    # a budget of 8.35 % read "at 5 % of the pool", as if it were one of 5 % (5.01 % is one)
    where = f"at {nearest:g} % of the pool" + (
        "" if abs(math.log(nearest / wanted)) < math.log(1.05)
        else f" (the measured budget nearest to this one, {pool_share(budget_fraction)})")
    if strength >= USEFUL_RHO:
        return Guidance(best, rhos, nearest, (
            f"Best label-free guide {where}: {name} ({'lower' if lower_better else 'higher'} is better; Spearman rho "
            f"with linear-probe accuracy {measured}, over every selection the benchmark made on those features)."))
    return Guidance(None, rhos, nearest, (
        f"No label-free diagnostic predicted linear-probe accuracy well {where} (the best, {name}, has rho "
        f"{measured}; |rho| < {USEFUL_RHO}): read these numbers as a description of the selection, not as a "
        "ranking of settings."))
