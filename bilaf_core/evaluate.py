"""Cheap accuracy of a selection on frozen features: a linear probe and k-NN.

Both train on the selected samples only (their labels are the oracle's) and report
top-1 on an evaluation split: the data set's test split when it has one, else the
pool samples that were not selected (:func:`evaluation_split` says which). Features
are L2-normalised first, as the BiLAF paper's frozen-feature protocols do.

* :func:`linear_probe` -- multinomial logistic regression (L-BFGS, deterministic).
* :func:`knn_accuracy` -- the DINO k-NN protocol (Caron et al., 2021): cosine
  similarity, the k nearest training samples vote with weight exp(s / T).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import _validation as v
from .core import l2_normalize

__all__ = ["PROTOCOLS", "EvalResult", "linear_probe", "knn_accuracy", "evaluate", "evaluation_split", "check_selection_labels",
           "check_indices"]

PROTOCOLS = ("linear", "knn")


@dataclass(frozen=True)
class EvalResult:
    """Top-1 accuracy of one protocol.

    ``top1`` is a fraction in [0, 1]; ``classes_seen`` counts the distinct labels in the
    training (selected) samples; ``eval_split`` is ``"test"`` or ``"unselected pool"``.
    """

    protocol: str
    top1: float
    n_train: int
    n_eval: int
    classes_seen: int
    n_classes: int
    eval_split: str
    seconds: float
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _labels(labels: object, n: int, name: str) -> np.ndarray:
    if labels is None:
        raise ValueError(f"{name} are missing: accuracy needs a label for every sample (the data set has none; "
                         "give an id,label CSV for the selected samples)")
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array with one entry per sample ({n}), got shape {array.shape}")
    array = v.as_int64(array, f"{name} must be integer class ids")
    if (array < 0).any():
        raise ValueError(f"{name} hold negative class ids (first at {int(np.flatnonzero(array < 0)[0])}); "
                         "unlabelled samples cannot be used for training or evaluation")
    return array


def _check_pair(features: object, labels: object, name: str) -> tuple[np.ndarray, np.ndarray]:
    array = v.check_features(features, name=f"{name} features")
    return array, _labels(labels, array.shape[0], f"{name} labels")


def check_selection_labels(labels: np.ndarray, *, protocol: str) -> None:
    """A classifier needs two classes among the training labels; k-NN works with one."""
    if protocol != "knn" and np.unique(labels).size < 2:
        raise ValueError(f"the selection holds only one class (label {int(labels[0])}); a {protocol} classifier "
                         "needs at least two: raise the budget or choose another selection")


def linear_probe(train_features, train_labels, eval_features, eval_labels, *, c: float = 10.0,
                 max_iter: int = 1000, eval_split: str = "test") -> EvalResult:
    """Top-1 of a logistic-regression probe trained on (train_features, train_labels).

    Parameters
    ----------
    train_features : (n, d) features of the selected samples.
    train_labels : (n,) int class ids; at least two distinct classes.
    eval_features, eval_labels : (m, d), (m,) the evaluation split.
    c : inverse L2 strength of scikit-learn's ``LogisticRegression`` (10 suits unit-norm
        features: measured best of 1/10/100/1000 on CIFAR-10 with 500 labels).
    """
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    x, y = _check_pair(train_features, train_labels, "training")
    xe, ye = _check_pair(eval_features, eval_labels, "evaluation")
    _check_dims(x, xe)
    check_selection_labels(y, protocol="linear probe")
    model = LogisticRegression(C=c, max_iter=max_iter)
    model.fit(l2_normalize(x), y)
    top1 = float(np.mean(model.predict(l2_normalize(xe)) == ye))
    return EvalResult("linear", top1, x.shape[0], xe.shape[0], int(np.unique(y).size), _n_classes(y, ye), eval_split,
                      time.perf_counter() - start, {"C": c, "max_iter": max_iter})


def knn_accuracy(train_features, train_labels, eval_features, eval_labels, *, k: int = 20,
                 temperature: float = 0.07, block: int = 4096, eval_split: str = "test") -> EvalResult:
    """Top-1 of weighted k-NN voting (DINO protocol) with the selected samples as memory.

    Each evaluation sample takes its min(k, n) most cosine-similar training samples; each
    votes for its label with weight exp(similarity / temperature); ties of the vote go to
    the lower class id.
    """
    start = time.perf_counter()
    x, y = _check_pair(train_features, train_labels, "training")
    xe, ye = _check_pair(eval_features, eval_labels, "evaluation")
    _check_dims(x, xe)
    k = min(v.check_positive_int(k, "k"), x.shape[0])
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    memory, n_classes = l2_normalize(x), int(max(y.max(), ye.max())) + 1
    correct = 0
    for lo in range(0, xe.shape[0], block):  # blocks keep the similarity matrix small
        query = l2_normalize(xe[lo:lo + block])
        similarity = query @ memory.T
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k] if k < x.shape[0] else \
            np.broadcast_to(np.arange(x.shape[0]), similarity.shape)
        weights = np.exp((np.take_along_axis(similarity, nearest, axis=1) - 1.0) / temperature)  # -1: no overflow
        votes = np.zeros((query.shape[0], n_classes))
        np.add.at(votes, (np.arange(query.shape[0])[:, None], y[nearest]), weights)
        correct += int(np.sum(votes.argmax(axis=1) == ye[lo:lo + block]))
    return EvalResult("knn", correct / xe.shape[0], x.shape[0], xe.shape[0], int(np.unique(y).size),
                      _n_classes(y, ye), eval_split, time.perf_counter() - start, {"k": k, "temperature": temperature})


def _check_dims(train: np.ndarray, evaluation: np.ndarray) -> None:
    if train.shape[1] != evaluation.shape[1]:
        raise ValueError(f"training features have {train.shape[1]} dims but evaluation features have "
                         f"{evaluation.shape[1]}; both must come from the same backbone")


def _n_classes(train_labels: np.ndarray, eval_labels: np.ndarray) -> int:
    return int(np.union1d(train_labels, eval_labels).size)


def evaluation_split(n_pool: int, selected: np.ndarray, test_features=None, test_labels=None,
                     pool_features=None, pool_labels=None) -> tuple[np.ndarray, np.ndarray, str]:
    """(features, labels, name) to evaluate on: the test split if given, else the
    unselected pool samples (a transductive estimate, named as such)."""
    if test_features is not None:
        return test_features, test_labels, "test"
    rest = np.setdiff1d(np.arange(n_pool), selected)
    if rest.size == 0:
        raise ValueError("the selection covers the whole pool and the data set has no test split: "
                         "nothing is left to evaluate on")
    return np.asarray(pool_features)[rest], None if pool_labels is None else np.asarray(pool_labels)[rest], \
        "unselected pool"


def evaluate(features, labels, indices, *, protocol: str = "linear", test_features=None, test_labels=None,
             **options) -> EvalResult:
    """Accuracy of the selection ``indices`` (rows of ``features``) under ``protocol``.

    Parameters
    ----------
    features : (N, d) the pool's features.
    labels : (N,) int class ids of the pool (the oracle).
    indices : (B,) distinct row indices of the selected samples.
    protocol : ``"linear"`` or ``"knn"``.
    test_features, test_labels : (M, d), (M,) optional test split; without it the
        unselected pool samples are the evaluation split.
    **options : passed to :func:`linear_probe` / :func:`knn_accuracy`.
    """
    protocol = v.check_choice(protocol, "protocol", PROTOCOLS)
    n = int(np.shape(features)[0])
    indices = check_indices(indices, n)
    if labels is None:
        raise ValueError("the pool has no labels, so accuracy cannot be measured; give an id,label CSV for the "
                         "selected samples and a labelled test split")
    eval_x, eval_y, split = evaluation_split(n, indices, test_features, test_labels, features, labels)
    if eval_y is None:
        raise ValueError("the test split has no labels; accuracy needs them")
    train_x, train_y = np.asarray(features)[indices], np.asarray(labels)[indices]
    run = linear_probe if protocol == "linear" else knn_accuracy
    return run(train_x, train_y, eval_x, eval_y, eval_split=split, **options)


def check_indices(indices: object, n: int) -> np.ndarray:
    """Distinct integer row indices in [0, n), or a clear error."""
    array = np.asarray(indices)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"the selection must be a non-empty 1-D list of integer indices, got shape {array.shape} "
                         f"and dtype {array.dtype}")
    outside = array[(array < 0) | (array >= n)]
    if outside.size:
        raise ValueError(f"{outside.size} selected index(es) are not in the pool of {n} samples (first: "
                         f"{int(outside[0])}); was the selection made on another feature file?")
    if np.unique(array).size != array.size:
        raise ValueError("the selection repeats samples; each index must appear once")
    return array.astype(np.int64)
