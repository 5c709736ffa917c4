"""Background training jobs for the Finetune page: one worker thread shared by all
sessions, so a long run never blocks a page; each job records itself in the run store
and can be cancelled. No Streamlit calls happen in the worker (only plain bilaf_core)."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import streamlit as st

from bilaf_core.data import load_pool
from bilaf_core.errors import Cancelled
from bilaf_core.evaluate import evaluate
from bilaf_core.export import exported_indices, marks_change
from bilaf_core.features import FeatureSet, extract_features, load_backbone
from bilaf_core.finetune import FinetuneConfig, finetune
from bilaf_core.store import RunStore

from .maps import time_left

from .state import Source

PROTOCOL_NAMES = {"linear": "Linear probe", "knn": "k-NN", "finetune": "Full finetuning"}
#: The Finetune page's protocol until one is chosen (or a link's is unusable).
DEFAULT_PROTOCOL = "linear"


def evaluated_on(outcome) -> str:
    """Where a run's top-1 was measured (an evaluation's or a finetuning's ``n_eval`` and
    ``eval_split``), in words: "10,000 samples of the test split" (it read "of the test")."""
    split = "test split" if outcome.eval_split == "test" else outcome.eval_split  # else "unselected pool"
    return f"{outcome.n_eval:,} samples of the {split}"


@dataclass
class Job:
    id: int
    protocol: str
    budget: int
    method: str
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: float = 0.0
    message: str = "queued"
    run_id: int | None = None
    future: Future | None = None
    backbone: str | None = None  # finetuning: the backbone asked for
    first_report: tuple[float, float] | None = None  # (time, fraction) of the first progress report
    source: Source | None = None  # the data set it trains on
    features: str = ""  # the features its selection was made on, as :func:`features_line` says them
    made_by: str = ""  # what made those features (:attr:`FeatureSet.backbone`): compared, not shown

    def title(self, current: Source, current_features: FeatureSet | None) -> str:
        """What the Finetune page calls this run: protocol, method and budget, and what it
        was trained on where that is not what the page is on now: another pool ("· on
        digits (not the current data set)"), or the same pool with other features ("·
        trained on digits with features pixels; the current features: asked
        vit_small_patch16_224.dino, used tf_efficientnet_lite0"). A result shown after a
        switch read as one of the new data set; the digits with DINO features and with
        pixels read as two data sets. Features are compared by what made them: DINO asked
        offline and EfficientNet-Lite0 asked give the same features."""
        name = f"{PROTOCOL_NAMES[self.protocol]} · {self.method} · B = {self.budget:,}"
        if self.source is None:
            return name
        if not same_pool(self.source, current):
            return name + f" · on {self.source.label} (not the current data set)"
        if current_features is not None and current_features.backbone != self.made_by:
            return name + (f" · trained on {self.source.label} with features {self.features}; the current features: "
                           f"{features_line(current, current_features)}")
        return name

    @property
    def done(self) -> bool:
        return self.future is not None and self.future.done()

    def report(self, fraction: float, message: str) -> None:
        """Progress of a linear probe or k-NN run, which stops here once Cancel is pressed
        (finetuning polls :attr:`cancel` itself and says in which epoch it stopped)."""
        if self.cancel.is_set():
            raise Cancelled("Cancelled from the app")
        self.note(fraction, message)

    def note(self, fraction: float, message: str) -> None:
        """Record a progress report (the first one starts the clock of :meth:`line`)."""
        if self.first_report is None:
            self.first_report = (time.monotonic(), fraction)
        self.progress, self.message = fraction, message

    def line(self, now: float | None = None) -> str:
        """The message with the time left (:func:`studio.maps.time_left`), estimated from
        the progress since the first report (a resumed finetuning starts part-way)."""
        if self.first_report is None:
            return self.message
        started, first = self.first_report
        elapsed = (time.monotonic() if now is None else now) - started
        since = (self.progress - first) / (1 - first) if first < 1 else 1.0
        return self.message + time_left(since, elapsed)


def trained(run: dict) -> tuple[str | None, int | None]:
    """The backbone and the number of epochs of a run-history record
    (:meth:`bilaf_core.store.RunStore.runs`): a finetuning run's own settings, its backbone
    the one it trained (:func:`backbone_line`); a linear probe or k-NN trains no backbone,
    so the backbone of the features it read (the selection's) and no epochs."""
    params = run.get("params") if isinstance(run.get("params"), dict) else {}
    if run.get("protocol") == "finetune":
        metrics = run.get("metrics") if isinstance(run.get("metrics"), dict) else {}
        return backbone_line(params.get("backbone"), metrics.get("backbone")), params.get("epochs")
    return run.get("backbone"), None


def protocol_line(run: dict) -> str:
    """A run-history record's protocol by name, with the setting that tells a probe's runs
    apart: "k-NN (k = 20)", "Linear probe (C = 10)", "Full finetuning" (whose backbone and
    epochs have columns of their own)."""
    name = PROTOCOL_NAMES.get(run.get("protocol"), str(run.get("protocol")))
    params = run.get("params") if isinstance(run.get("params"), dict) else {}
    setting = {"knn": "k", "linear": "c"}.get(run.get("protocol"))
    return f"{name} ({setting.upper() if setting == 'c' else setting} = {params[setting]:g})" \
        if setting in params else name


def error_to_read(runs: list[dict], chosen: list[int]) -> dict | None:
    """The run whose error the Finetune page writes out under its history table (where the
    table's error column is cut in a narrow window): the chosen row's (``chosen``: the
    table's selected row positions), else the newest run with an error; None when that
    row, or every run, has none. ``runs``: the table's rows, newest first."""
    def has_error(run: dict | None) -> bool:  # a table's run without one holds NaN (or None)
        return run is not None and isinstance(run.get("error"), str) and bool(run["error"].strip())

    if chosen:
        run = runs[chosen[0]] if chosen[0] < len(runs) else None
        return run if has_error(run) else None
    return next((run for run in runs if has_error(run)), None)


def backbone_line(asked: str | None, used: str | None) -> str | None:
    """The backbone a finetuning run trained, said against the one asked for where they
    differ ("asked vit_small_patch16_224.dino, used tf_efficientnet_lite0": the offline
    fallback of :func:`bilaf_core.features.load_backbone`). ``used`` is None for a run
    recorded before the backbone was loaded (or by an older version): the one asked for."""
    if not used or used == asked:
        return asked
    return f"asked {asked}, used {used}" if asked else used


def features_line(source: Source, fs: FeatureSet | None) -> str:
    """The features a pool's selections are made on, in the one wording of the sidebar, a
    run's banner and the run history: "pixels", "tf_efficientnet_lite0", "asked
    vit_small_patch16_224.dino, used tf_efficientnet_lite0" after the offline fallback
    (:func:`backbone_line` of :attr:`FeatureSet.backbone_name`), with the weights file
    where one is given; "from file" for a feature file. ``fs`` None: not loaded yet (the
    backbone asked for)."""
    if source.feature_file:
        return "from file"
    line = backbone_line(source.backbone, fs.backbone_name if fs is not None else None) or ""
    return f"{line} (weights {Path(source.weights).name})" if source.weights else line


def same_pool(a: Source, b: Source) -> bool:
    """Whether two sources are the same pool of samples (their features may differ)."""
    return replace(a, backbone="", weights="") == replace(b, backbone="", weights="")


def history_name(dataset: str, features: str | None) -> str:
    """A data set and its features as the run history tells them apart: "digits ·
    features pixels" (a run recorded without features: the data set alone)."""
    return f"{dataset} · features {features}" if features else str(dataset)


def no_test_split(source: Source, fs: FeatureSet, test) -> str | None:
    """Why no run can be measured on this pool, said before Launch: a pool without labels
    trains on the user's labels CSV, and its accuracy needs a labelled test split, which
    it lacks (the run failed once launched: "folder has no labelled test split ...").
    ``test``: an image pool's test split (None without a test folder). None when a run
    can be measured (a labelled pool is measured on its unselected samples)."""
    if fs.labels is not None:
        return None
    if source.feature_file:
        if fs.test_features is not None and fs.test_labels is not None:
            return None
        return (f"{source.label} has no labels and no test split, so a run has nothing to measure its accuracy on. "
                "Add `test_features` and `test_labels` arrays to the file, or load a labelled pool on the Data page.")
    if test is not None and test.labels is not None:
        return None
    return (f"{source.label} has no labels and no labelled test folder, so a run would train on your labels CSV "
            "with nothing to measure its accuracy on. On the Data page, give a Test folder with one subfolder of "
            "images per class, then launch.")


@st.cache_resource
def _worker() -> tuple[ThreadPoolExecutor, dict, itertools.count]:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="bilaf-training"), {}, itertools.count(1)


def get(job_id: int | None) -> Job | None:
    return _worker()[1].get(job_id)


@dataclass(frozen=True)
class TrainingInput:
    """Everything a job needs, resolved on the page (the worker calls no Streamlit)."""

    source: Source
    features: np.ndarray
    labels: np.ndarray | None
    ids: np.ndarray
    kept: np.ndarray
    backbone_description: str  # what made the features (:attr:`FeatureSet.backbone`)
    features_said: str  # the same, as :func:`features_line` says it (recorded with the selection)
    test_features: np.ndarray | None
    test_labels: np.ndarray | None


def submit(store_path: Path, data: TrainingInput, selection, protocol: str, options: dict,
           *, excluded: frozenset[int] = frozenset(), forced: frozenset[int] = frozenset(),
           selected_labels: np.ndarray | None = None) -> Job:
    """Queue a linear-probe, k-NN or finetuning run on the worker. It trains on what the
    export holds (:func:`bilaf_core.export.exported_indices`): ``selection`` with the
    manual marks applied, the samples that get labelled; ``selected_labels`` are their
    labels, in that order, for a pool without labels."""
    indices = exported_indices(selection, excluded=excluded, forced=forced)
    executor, jobs, counter = _worker()
    job = Job(next(counter), protocol, int(indices.size), selection.params["method"], backbone=options.get("backbone"),
              source=data.source, features=data.features_said, made_by=data.backbone_description)
    job.future = executor.submit(_run, job, store_path, data, selection, indices, protocol, dict(options),
                                 selected_labels)
    jobs[job.id] = job
    return job


def marks_params(selection, indices: np.ndarray) -> dict:
    """The selection's parameters as a run records them: with ``marks`` (samples taken out,
    samples added) where the manual marks changed what is trained on."""
    taken_out, added = marks_change(selection, indices)
    return {**selection.params, "marks": f"-{taken_out}+{added}"} if taken_out or added else dict(selection.params)


def _run(job: Job, store_path: Path, data: TrainingInput, selection, indices: np.ndarray, protocol: str,
         options: dict, selected_labels: np.ndarray | None):
    store = RunStore(store_path)
    selection_id = store.add_selection(
        dataset=data.source.label, backbone=data.features_said, params=marks_params(selection, indices),
        indices=indices, sample_ids=data.ids[indices], n_pool=len(data.ids),
        seconds=selection.timings.get("total"))
    with store.track(protocol=protocol, params=options, selection_id=selection_id) as run:
        job.run_id = run.id

        def progress(fraction: float, message: str) -> None:
            if protocol == "finetune":  # stops through should_stop, saying where (bilaf_core.finetune)
                job.note(fraction, message)
            else:
                job.report(fraction, message)
            run.progress(fraction, message)

        if protocol == "finetune":
            result = _finetune(job, data, indices, options, selected_labels, progress, run)
        else:
            test_x, test_y = _test_split(data, progress)
            labels = data.labels
            if selected_labels is not None:  # user-given labels for an unlabelled pool
                if test_x is None:
                    raise ValueError("an unlabelled pool needs a labelled test folder to measure accuracy on; give "
                                     "one on the Data page")
                labels = np.full(len(data.ids), -1)
                labels[indices] = selected_labels
            progress(0.9, f"training the {PROTOCOL_NAMES[protocol].lower()}")
            result = evaluate(data.features, labels, indices, protocol=protocol, test_features=test_x,
                              test_labels=test_y, **options)
        run.metrics = result.to_dict()
        job.progress, job.message = 1.0, "done"
    return result


def _test_split(data: TrainingInput, progress: Callable[[float, str], None]):
    """The test split's features: shipped with the feature file, or extracted (cached on
    disk) with the pool's backbone; None when the source has no test split."""
    if data.test_features is not None or data.source.feature_file:
        return data.test_features, data.test_labels
    pool = load_pool(data.source.dataset, root=data.source.root or None, test_root=data.source.test_root or None)
    if pool.test is None:
        return None, None
    backbone = load_backbone(data.source.backbone, weights=data.source.weights or None, allow_fallback=True,
                             notify=lambda message: None)
    test = extract_features(pool.test, backbone, progress=lambda f, m: progress(0.9 * f, f"test split: {m}"))
    return np.asarray(test.features, dtype=np.float32), test.labels


def _finetune(job: Job, data: TrainingInput, indices: np.ndarray, options: dict, selected_labels, progress, run):
    options = dict(options)
    backbone, weights = options.pop("backbone"), options.pop("weights", None)
    pool = load_pool(data.source.dataset, root=data.source.root or None, test_root=data.source.test_root or None)

    def on_start(used: dict) -> None:  # the backbone trained (the bundled one after a fallback), recorded at once
        run.metrics = {**run.metrics, **used}

    def on_epoch(entry: dict) -> None:
        run.metrics = {**run.metrics, "history": run.metrics.get("history", []) + [entry]}

    return finetune(pool, data.kept[indices], labels=selected_labels, backbone=backbone, weights=weights,
                    config=FinetuneConfig(**options), allow_fallback=True, progress=progress,
                    should_stop=job.cancel.is_set, on_epoch=on_epoch, on_start=on_start)
