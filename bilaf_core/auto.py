"""``n_cores="auto"``: a label-free split of the budget between stage 1 (cores) and
stage 2 (boundary samples).

The rule (measured on CIFAR-10 features, see ``benchmarks/results/selection_quality.md``):

* **Low budget** -- ``N / B >= LOW_BUDGET_POOL_PER_LABEL`` (each label stands for 50 or
  more pool samples, B <= 2 % of N): every label goes to a core, K = B; BiLAF is then
  ActiveFT over the whole budget. With so few labels, the samples that represent dense
  regions train better than samples near boundaries (Hacohen et al., ICML 2022, "Active
  Learning on a Budget"); on CIFAR-10, splitting such budgets between cores and
  boundaries lost 0.2 to 3.4 points of linear probe against K = B at every K tried
  (10 to B / 2), except K = 50 at B = 1,000, which was level.
* **Higher budgets** -- K = round(sqrt(B)): as many pseudo-classes as labels per
  pseudo-class. Too few pseudo-classes miss modes of the pool; too few labels per
  pseudo-class leave nothing to trace its boundary with; the geometric mean splits the
  budget evenly between the two (B = 2,500 gives the paper's K = 50 for CIFAR-10).

The rule reads only N and B, so it costs nothing next to the selection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["AUTO", "LOW_BUDGET_POOL_PER_LABEL", "CoreSplit", "auto_n_cores"]

#: The value of ``n_cores`` that asks for this rule.
AUTO = "auto"
#: N / B at or above which a budget counts as low (every label a core).
LOW_BUDGET_POOL_PER_LABEL = 50


@dataclass(frozen=True)
class CoreSplit:
    """K chosen for a budget, and the one-line reason the app and the CLI show."""

    n_cores: int
    reason: str


def auto_n_cores(n_samples: int, budget: int) -> CoreSplit:
    """K for a pool of ``n_samples`` and a budget B (1 <= B <= N), label-free.

    Returns
    -------
    CoreSplit with 1 <= n_cores <= budget.
    """
    if budget * LOW_BUDGET_POOL_PER_LABEL <= n_samples:
        return CoreSplit(budget, f"auto: B = {budget:,} is at most 1/{LOW_BUDGET_POOL_PER_LABEL} of the pool (low "
                                 "budget), so every label goes to a representative core (K = B)")
    k = round(math.sqrt(budget))  # 1 <= k <= B for every B >= 1
    return CoreSplit(k, f"auto: K = round(sqrt(B)) = {k:,} pseudo-classes of about {budget / k:.0f} labels each, "
                        f"as B = {budget:,} is more than 1/{LOW_BUDGET_POOL_PER_LABEL} of the pool")
