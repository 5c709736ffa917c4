"""Input validation at the public boundary.

Every check raises :class:`ValueError` with a message that names the parameter, the
value received and the allowed range, so the command line and the app can show it
as one line. Inside the library the validated values are trusted.
"""

from __future__ import annotations

import numbers
from typing import Iterable

import numpy as np

__all__ = [
    "check_features",
    "check_budget",
    "check_n_cores",
    "check_core_indices",
    "check_ratio",
    "check_positive_int",
    "check_penalty",
    "check_choice",
    "check_random_state",
    "MAX_SEED",
    "check_shape_and_dtype",
    "non_finite_message",
    "as_int64",
    "is_int",
]


def check_features(features: object, *, name: str = "features") -> np.ndarray:
    """Return ``features`` as a C-contiguous float32 (N, d) array, or raise.

    float16 and float64 inputs are converted; memory-mapped float32 arrays are used
    as they are (no copy) when already contiguous.
    """
    if isinstance(features, np.ndarray) and features.dtype == object:
        raise ValueError(f"{name} must be a numeric array, got an array of Python objects")
    try:
        array = np.asarray(features)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} must be a 2-D numeric array (N samples x d dims): {exc}") from None
    check_shape_and_dtype(array, name=name)
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad_rows = _non_finite_rows(array)
    if bad_rows.size:
        raise ValueError(non_finite_message(name, bad_rows.size, int(bad_rows[0])))
    return array


def _non_finite_rows(array: np.ndarray) -> np.ndarray:
    """Indices of the rows of a float (N, d) array holding a NaN or an infinity. A NaN or
    infinity makes its row's sum non-finite, so one BLAS pass over the rows (a third of
    the time of ``np.isfinite(array).all(axis=1)``, without its N x d temporary) finds
    the suspects; only those, which overflow can add, are checked element by element."""
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    with np.errstate(invalid="ignore", over="ignore"):
        suspects = np.flatnonzero(~np.isfinite(array @ np.ones(array.shape[1], dtype=array.dtype)))
    return suspects[~np.isfinite(array[suspects]).all(axis=1)]


def is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_budget(budget: object, n_samples: int) -> int:
    if not is_int(budget):
        raise ValueError(f"budget must be an integer, got {budget!r}")
    budget = int(budget)
    if not 1 <= budget <= n_samples:
        raise ValueError(f"budget must be in [1, {n_samples}] (the pool size), got {budget}")
    return budget


def check_n_cores(n_cores: object, budget: int, n_samples: int) -> int:
    if not is_int(n_cores):
        raise ValueError(f"n_cores must be an integer or 'auto', got {n_cores!r}")
    n_cores = int(n_cores)
    if n_cores > budget:
        raise ValueError(
            f"budget must be at least n_cores: got budget {budget} < n_cores {n_cores}; raise the budget or lower n_cores"
        )
    upper = min(budget, n_samples)
    if not 1 <= n_cores <= upper:
        raise ValueError(
            f"n_cores must be in [1, {upper}] (at most the budget {budget} and the pool size {n_samples}), "
            f"got {n_cores}"
        )
    return n_cores


def check_core_indices(cores: object, n_samples: int, budget: int) -> np.ndarray:
    """Validate user-given core indices; return them as a sorted int64 array."""
    array = np.asarray(cores)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"cores must be a non-empty 1-D array of pool indices, got shape {array.shape}")
    array = as_int64(array, "cores must hold integer pool indices")
    if array.min() < 0 or array.max() >= n_samples:
        raise ValueError(f"cores must be indices in [0, {n_samples - 1}], got values from {array.min()} to {array.max()}")
    unique = np.unique(array)
    if unique.size != array.size:
        raise ValueError(f"cores must be distinct, got {array.size - unique.size} repeated index(es)")
    if unique.size > budget:
        raise ValueError(f"budget must be at least the number of cores ({unique.size}), got {budget}")
    return unique


def check_ratio(value: object, name: str, *, high_inclusive: bool = False, low_exclusive: bool = False) -> float:
    interval = f"{'(' if low_exclusive else '['}0, 1{']' if high_inclusive else ')'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    value = float(value)
    too_low = value <= 0 if low_exclusive else value < 0
    too_high = value > 1 if high_inclusive else value >= 1
    if too_low or too_high:
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def check_positive_int(value: object, name: str) -> int:
    if not is_int(value) or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_penalty(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise ValueError(f"opponent_penalty must be a number >= 1.0, got {value!r}")
    if float(value) < 1.0:
        raise ValueError(f"opponent_penalty must be >= 1.0 (1.0 switches the penalty off), got {value}")
    return float(value)


def check_choice(value: object, name: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


#: The largest seed: faiss's k-means (stage 1, TypiClust, ProbCover) takes a C int and
#: raised OverflowError for 2**31.
MAX_SEED = 2**31 - 1


def check_random_state(random_state: object) -> int | None:
    """Accept None or an integer seed in [0, :data:`MAX_SEED`] (numpy integers included)."""
    if random_state is None:
        return None
    if not is_int(random_state) or not 0 <= int(random_state) <= MAX_SEED:
        raise ValueError(f"random_state must be None or a non-negative integer seed, at most {MAX_SEED} (faiss's "
                         f"limit), got {random_state!r}")
    return int(random_state)


def check_shape_and_dtype(array: np.ndarray, *, name: str = "features") -> None:
    """A numeric, non-empty 2-D array (N samples x d dims), or a ValueError saying why."""
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{name} must be a numeric array, got dtype {array.dtype}")
    if array.size == 0:  # before the shape: an empty 1-D file was told to reshape "a single vector"
        raise ValueError(f"{name} is empty (shape {array.shape}); it needs at least 1 sample and 1 dimension")
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (N samples x d dims), got {array.ndim}-D with shape {array.shape}; "
            "reshape a single vector with .reshape(1, -1) or stack your vectors into rows"
        )


def non_finite_message(name: str, n_bad_rows: int, first: int) -> str:
    return (f"{name} holds NaN or infinite values in {n_bad_rows} row(s), first at row {first}; "
            "remove or repair those rows before selecting")


def as_int64(array: np.ndarray, message: str) -> np.ndarray:
    """Integers, or floats that hold whole numbers, as int64; else ``message``, dtype named."""
    if not np.issubdtype(array.dtype, np.integer):
        whole = np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) and np.all(array == np.round(array))
        if not whole:
            raise ValueError(f"{message}, got dtype {array.dtype}")
    return array.astype(np.int64)
