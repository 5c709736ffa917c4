"""The selection parameters, defined once.

:class:`SelectionParams` is the single definition of every option of
:func:`bilaf_core.select`: its name, default, allowed range and help text. Everything
else derives from it: ``select``'s signature and validation, the :class:`BiLAF`
estimator's parameters, the command line's options, the app's widgets and cache keys,
and the Learn page's stage-2 options. Adding a parameter means adding one field here
(and using it in the algorithm).

Checks that need the pool (K against the budget and N) stay in ``select``.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _validation as v
from .auto import AUTO
from .boundary import CRITERIA, DENOISERS, PROCESSES, VARIANTS
from .core import CORE_METHODS

__all__ = ["METHODS", "SelectionParams", "ParamSpec", "param_specs", "STAGE2_PARAMS", "BILAF_ONLY_PARAMS"]

METHODS = ("bilaf", "activeft", "kmeans", "fds", "random", "typiclust", "probcover")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter as a widget or an option needs it.

    ``kind`` is "choice" (one of ``choices``), "int" or "float" (within ``low`` ..
    ``high``, None: unbounded; a slider spans ``widget_low`` .. ``widget_high``, by
    default the same bounds),
    "n_cores" (a positive int or "auto"), "optional_bool" or "seed" (an int or None).
    ``stage`` is "method", "stage1", "stage2" or "run".
    """

    name: str
    default: Any
    help: str
    kind: str
    stage: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    widget_low: float | None = None
    widget_high: float | None = None
    step: float | None = None
    label: str = ""

    @property
    def widget_range(self) -> tuple[float | None, float | None]:
        """(min, max) of the app's slider or number input for this parameter."""
        low = self.low if self.widget_low is None else self.widget_low
        return low, self.high if self.widget_high is None else self.widget_high

    @property
    def flag(self) -> str:
        """The command-line option, e.g. ``--k-neighbors``."""
        return "--seed" if self.name == "random_state" else "--" + self.name.replace("_", "-")


def _spec(default, help: str, kind: str, stage: str, **extra) -> Any:
    return field(default=default, metadata={"help": help, "kind": kind, "stage": stage, **extra})


@dataclass(frozen=True)
class SelectionParams:
    """Every option of a selection, validated on construction (ValueError naming the
    parameter, the value and the allowed range). See ``docs/ALGORITHM.md`` for the
    algorithm each one controls."""

    method: str = _spec("bilaf", "'bilaf' is the two-stage method; the others select the whole budget themselves "
                        "(stage-1 methods and the TypiClust / ProbCover baselines).", "choice", "method",
                        choices=METHODS, label="Method")
    n_cores: int | str | None = _spec(
        AUTO, "K, the number of core samples (pseudo-class centres) of stage 1. 'auto': K = B for budgets of at most "
        "2 % of the pool (every label a core), else round(sqrt(B)); None (library only): the paper's generic "
        "0.5 % of N.",
        "n_cores", "stage1", label="K: core samples (stage 1)")
    core_method: str = _spec("activeft", "How stage 1 chooses the cores.", "choice", "stage1", choices=CORE_METHODS,
                             label="Stage-1 core method")
    variant: str = _spec("paper", "'paper': the paper's method with the reference code's defects fixed; "
                         "'reference': the authors' code reproduced index for index.", "choice", "stage2",
                         choices=VARIANTS, label="Variant")
    k_neighbors: int = _spec(10, "k of the iterative density-based denoising (IDC): a sample's density distance is its mean distance to "
                             "its k nearest already-included cluster members.", "int",
                             "stage2", low=1, widget_high=50, step=1, label="k: density neighbours")
    include_ratio: float = _spec(0.1, "P_in: the share of a cluster that IDC adds to its included set per round (the first round: the "
                                 "samples closest to the core).",
                                 "float", "stage2", low=0.0, high=1.0, widget_low=0.05, step=0.05,
                                 label="P_in: include ratio per IDC round")
    removal_ratio: float = _spec(0.1, "P_rm: the share of each cluster, the least dense by IDC's ranking, removed as noise before the "
                                 "boundary picks.",
                                 "float", "stage2", low=0.0, high=1.0, widget_high=0.9, step=0.05,
                                 label="P_rm: removal ratio")
    opponent_penalty: float = _spec(1.1, "delta of paper Eq. 7: an opponent cluster already picked against is "
                                    "penalised by this factor (1.0 = no penalty).", "float", "stage2", low=1.0,
                                    widget_high=2.0, step=0.05, label="delta: opponent penalty (1 = off)")
    denoise: str = _spec("idc", "Denoising (paper Table 2 ablation).", "choice", "stage2", choices=DENOISERS,
                         label="Denoiser")
    criterion: str = _spec("boundary_score", "How boundary samples are ranked (paper Table 2 ablation).", "choice",
                           "stage2", choices=CRITERIA, label="Criterion")
    process: str = _spec("iterative", "Pick boundary samples one at a time or all at once (paper Table 2 ablation).",
                         "choice", "stage2", choices=PROCESSES, label="Process")
    normalize: bool | None = _spec(None, "L2-normalise the features for stage 2 and the baselines; None: the "
                                   "variant's default (True for 'paper', False for 'reference').", "optional_bool",
                                   "run", label="L2-normalise")
    random_state: int | None = _spec(None, "Seed: the same seed and inputs give the same selection.", "seed", "run",
                                     label="Seed")

    def __post_init__(self) -> None:
        v.check_choice(self.method, "method", METHODS)
        v.check_choice(self.core_method, "core_method", CORE_METHODS)
        v.check_choice(self.variant, "variant", VARIANTS)
        v.check_choice(self.denoise, "denoise", DENOISERS)
        v.check_choice(self.criterion, "criterion", CRITERIA)
        v.check_choice(self.process, "process", PROCESSES)
        if self.n_cores is not None and self.n_cores != AUTO and not v.is_int(self.n_cores):
            raise ValueError(f"n_cores must be an integer or 'auto', got {self.n_cores!r}")  # its range: select()
        v.check_positive_int(self.k_neighbors, "k_neighbors")
        v.check_ratio(self.include_ratio, "include_ratio", high_inclusive=True, low_exclusive=True)
        v.check_ratio(self.removal_ratio, "removal_ratio")
        v.check_penalty(self.opponent_penalty)
        v.check_random_state(self.random_state)
        if self.normalize is not None and not isinstance(self.normalize, (bool, np.bool_)):
            raise ValueError(f"normalize must be True, False or None (the variant's default), got {self.normalize!r}")

    @classmethod
    def from_options(cls, options: dict) -> "SelectionParams":
        """From keyword options, with a clear error for an unknown name."""
        unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            names = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ValueError(f"unknown selection parameter(s) {', '.join(sorted(unknown))}; the parameters are {names}")
        return cls(**options)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def normalizes(self) -> bool:
        """Whether the selection works on L2-normalised features: ``normalize``, or where
        it is None the variant's default (paper: True, reference: False)."""
        return self.variant == "paper" if self.normalize is None else bool(self.normalize)

    def key(self) -> tuple:
        """A hashable, ordered (name, value) tuple, for caches."""
        return tuple(self.as_dict().items())


def param_specs() -> tuple[ParamSpec, ...]:
    """Every field of :class:`SelectionParams` as a :class:`ParamSpec`, in order."""
    return tuple(ParamSpec(name=f.name, default=f.default, **f.metadata) for f in dataclasses.fields(SelectionParams))


#: The options that change only stage 2 (the Learn page's stage-2 controls, and what a
#: reused stage-2 geometry allows to vary).
STAGE2_PARAMS = tuple(spec.name for spec in param_specs() if spec.stage == "stage2")
#: The options only BiLAF uses: a whole-budget baseline (any other method) picks B samples
#: itself, with no cores, denoising or boundary scores. The variant is not one of them: it
#: sets the default of the L2 normalisation every method works in.
BILAF_ONLY_PARAMS = tuple(spec.name for spec in param_specs()
                          if spec.stage in ("stage1", "stage2") and spec.name != "variant")


#: A new selection's budget, in percent of the pool (the app's starting value, in either
#: of its units: B = 90 samples of the digits' 1,797, which is what typing 5 % selects).
DEFAULT_BUDGET_PERCENT = 5.0


def budget_from_percent(n_samples: int, percent: float) -> int:
    """The whole number of samples ``percent`` % of a pool of ``n_samples`` is (rounded to
    the nearest; it may lie outside 1 .. N, for the caller to clamp or refuse)."""
    return round(n_samples * float(percent) / 100)


def default_budget(n_samples: int) -> int:
    """B of a new selection on a pool of ``n_samples``: :data:`DEFAULT_BUDGET_PERCENT` of it,
    at least 1 and at most the pool."""
    return max(1, min(n_samples, budget_from_percent(n_samples, DEFAULT_BUDGET_PERCENT)))


def keyword_parameters() -> list[inspect.Parameter]:
    """:class:`SelectionParams`' fields as keyword-only signature parameters (for the
    signatures of ``select`` and ``BiLAF.__init__``)."""
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
            for f in dataclasses.fields(SelectionParams)]
