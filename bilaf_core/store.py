"""The run history: every selection and every training run, in one SQLite file.

The command line and the app share it. Each write is one transaction; the database
runs in WAL mode with a busy timeout, so two app sessions (or the app and the command
line) can write at once. A run is inserted as ``running`` with its process id before
any work starts and finished as ``completed``, ``failed`` or ``cancelled``; a run whose
process died without finishing is found by :meth:`RunStore.reap_stale` (called on every
open) and marked ``failed``, so nothing is lost or left pending forever.

Default location: ``$BILAF_STORE``, else ``$BILAF_DATA_DIR/runs.sqlite``, else
``~/.local/share/bilaf-studio/runs.sqlite``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sqlite3
import time
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import Cancelled

__all__ = ["RunStore", "TrackedRun", "StoreError", "default_store_path", "library_versions", "run_method", "RUN_STATUSES"]

RUN_STATUSES = ("running", "completed", "failed", "cancelled")
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS selections (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    dataset TEXT NOT NULL,
    backbone TEXT NOT NULL,
    method TEXT NOT NULL,
    budget INTEGER NOT NULL,
    n_pool INTEGER NOT NULL,
    seed INTEGER,
    params TEXT NOT NULL,
    sample_ids TEXT NOT NULL,
    indices TEXT NOT NULL,
    seconds REAL,
    versions TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    selection_id INTEGER REFERENCES selections(id),
    protocol TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    started REAL NOT NULL,
    ended REAL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    metrics TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    versions TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_selection ON runs(selection_id);
"""


class StoreError(RuntimeError):
    """The store cannot be used (read-only, locked, corrupted); the message says what to do."""


def default_store_path() -> Path:
    if os.environ.get("BILAF_STORE"):
        return Path(os.environ["BILAF_STORE"])
    if os.environ.get("BILAF_DATA_DIR"):
        return Path(os.environ["BILAF_DATA_DIR"]) / "runs.sqlite"
    return Path.home() / ".local" / "share" / "bilaf-studio" / "runs.sqlite"


def library_versions() -> dict:
    """Versions that decide a result: Python, bilaf_core and the numeric libraries loaded."""
    from importlib import metadata

    from . import __version__

    versions = {"python": platform.python_version(), "bilaf_core": __version__}
    for package in ("numpy", "scikit-learn", "torch", "timm", "faiss-cpu"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunStore:
    """The SQLite run history.

    Parameters
    ----------
    path : the database file (created with its folder when missing); default
        :func:`default_store_path`.
    timeout : seconds to wait for another writer's lock before :class:`StoreError`.

    Raises
    ------
    StoreError : the file is not a database (corrupted), cannot be written (read-only)
        or stays locked; the message names the file and what to do.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, timeout: float = 10.0):
        self.path = Path(path) if path is not None else default_store_path()
        self.timeout = timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of the run store {self.path}: {exc}; "
                             "choose another store path (BILAF_STORE)") from None
        version = self._read("PRAGMA user_version")[0]["user_version"]
        if version > _SCHEMA_VERSION:
            raise StoreError(f"the run store {self.path} was written by a newer BiLAF Studio (schema {version}); "
                             "upgrade, or choose another store path")
        if version < _SCHEMA_VERSION:  # a new file: create the tables (readers never need the write lock)
            with self._transaction() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):  # executescript would commit early
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        self.reap_stale()

    def write_problem(self) -> str | None:
        """Why a write would fail now (read-only file, held lock), or None; never waits."""
        try:
            with closing(sqlite3.connect(self.path, timeout=0, isolation_level=None)) as db:
                db.execute("BEGIN IMMEDIATE")
                db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")  # a real (rolled back) write
                db.execute("ROLLBACK")
        except sqlite3.DatabaseError as exc:
            return self._explain(exc, waited=0)
        return None

    # -- plumbing ---------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One connection, one ``BEGIN IMMEDIATE`` ... ``COMMIT``; errors become StoreError."""
        try:
            with closing(self._connect()) as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._explain(exc)) from None

    def _read(self, sql: str, args: tuple = ()) -> list[dict]:
        try:
            with closing(self._connect()) as db:
                return [dict(row) for row in db.execute(sql, args).fetchall()]
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._explain(exc)) from None

    def _explain(self, exc: sqlite3.DatabaseError, *, waited: float | None = None) -> str:
        text = str(exc).lower()
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            return (f"the run store {self.path} cannot be written ({exc}); check its permissions or choose another "
                    "store path (BILAF_STORE)")
        if "locked" in text or "busy" in text:
            waited = self.timeout if waited is None else waited
            return (f"the run store {self.path} is locked by another writer"
                    f"{f' (waited {waited:g} s)' if waited else ''}; try again when the other run has finished")
        return (f"the run store {self.path} is not a readable database ({exc}); it may be corrupted: move it "
                "away (your other files are untouched) or choose another store path (BILAF_STORE)")

    # -- selections -------------------------------------------------------------------
    def add_selection(self, *, dataset: str, backbone: str, params: dict, indices: np.ndarray,
                      sample_ids: np.ndarray | None, n_pool: int, seconds: float | None = None) -> int:
        """Record a selection; returns its id. ``indices`` are rows of the feature set,
        ``sample_ids`` their stable ids (what an export and a later training run use)."""
        indices = np.asarray(indices, dtype=np.int64)
        ids = [str(i) for i in (sample_ids if sample_ids is not None else indices)]
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO selections (created, dataset, backbone, method, budget, n_pool, seed, params, sample_ids,"
                " indices, seconds, versions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), dataset, backbone, str(params.get("method", "")), int(indices.size), int(n_pool),
                 params.get("random_state"), json.dumps(params, default=str), json.dumps(ids),
                 json.dumps(indices.tolist()), seconds, json.dumps(library_versions())))
            return int(cursor.lastrowid)

    def selection(self, selection_id: int) -> dict:
        return self._one("selections", selection_id)

    def selections(self) -> list[dict]:
        return [_decode(row) for row in self._read("SELECT * FROM selections ORDER BY id")]

    # -- training runs ----------------------------------------------------------------
    def start_run(self, *, protocol: str, params: dict, selection_id: int | None = None) -> int:
        """Insert a ``running`` run owned by this process; returns its id."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (selection_id, protocol, params, status, started, host, pid, versions)"
                " VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                (selection_id, protocol, json.dumps(params, default=str), time.time(), socket.gethostname(),
                 os.getpid(), json.dumps(library_versions())))
            return int(cursor.lastrowid)

    def update_run(self, run_id: int, *, progress: float, message: str = "", metrics: dict | None = None) -> None:
        """Progress of a running run (and metrics so far, e.g. per-epoch accuracy)."""
        with self._transaction() as db:
            if metrics is None:
                db.execute("UPDATE runs SET progress = ?, message = ? WHERE id = ? AND status = 'running'",
                           (float(progress), message, int(run_id)))
            else:
                db.execute("UPDATE runs SET progress = ?, message = ?, metrics = ? WHERE id = ? AND status = 'running'",
                           (float(progress), message, json.dumps(metrics, default=float), int(run_id)))

    def finish_run(self, run_id: int, *, status: str, metrics: dict | None = None, error: str | None = None) -> None:
        if status not in RUN_STATUSES[1:]:
            raise ValueError(f"a run finishes as one of {RUN_STATUSES[1:]}, got {status!r}")
        with self._transaction() as db:
            db.execute("UPDATE runs SET status = ?, ended = ?, error = ?, metrics = COALESCE(?, metrics),"
                       " progress = CASE WHEN ? = 'completed' THEN 1 ELSE progress END WHERE id = ?",
                       (status, time.time(), error, None if metrics is None else json.dumps(metrics, default=float),
                        status, int(run_id)))

    @contextmanager
    def track(self, *, protocol: str, params: dict, selection_id: int | None = None) -> Iterator["TrackedRun"]:
        """Record a run around a block: ``running`` on entry; ``completed`` with the
        metrics set on the handle, ``cancelled`` (KeyboardInterrupt or
        :class:`bilaf_core.errors.Cancelled`, its message kept as it is) or ``failed`` (any other
        error, its type and message kept) on exit."""
        run = TrackedRun(self, self.start_run(protocol=protocol, params=params, selection_id=selection_id))
        try:
            yield run
        except BaseException as exc:
            cancelled = isinstance(exc, (KeyboardInterrupt, Cancelled))
            # a cancel's own words ("Cancelled during epoch 3 of 10"); an error with its type
            said = str(exc) if isinstance(exc, Cancelled) and str(exc) else f"{type(exc).__name__}: {exc}"
            self.finish_run(run.id, status="cancelled" if cancelled else "failed", metrics=run.metrics,
                            error=said[:2000])
            raise
        self.finish_run(run.id, status="completed", metrics=run.metrics)

    def run(self, run_id: int) -> dict:
        return self._one("runs", run_id)

    def _one(self, table: str, row_id: int) -> dict:
        rows = self._read(f"SELECT * FROM {table} WHERE id = ?", (int(row_id),))  # table: a literal of this class
        if not rows:
            raise StoreError(f"no {table[:-1]} {row_id} in the run store {self.path}")
        return _decode(rows[0])

    def runs(self) -> list[dict]:
        """Every run joined with its selection's data set, method and budget, newest first."""
        return [_decode(row) for row in self._read(
            "SELECT runs.*, selections.dataset, selections.backbone, selections.method, selections.budget,"
            " selections.n_pool, selections.seed, selections.params AS selection_params FROM runs LEFT JOIN selections ON selections.id = runs.selection_id"
            " ORDER BY runs.id DESC")]

    def learning_curve(self, dataset: str, backbone: str | None = None) -> list[dict]:
        """The completed runs of one data set that measured a top-1, as a learning curve:
        one row per (protocol, method, budget) with the ``mean``, ``std`` (NaN for a single
        run) and ``count`` of their top-1, sorted by protocol, method and budget; the method
        as :func:`run_method` names it (hand-edited picks apart from the method's own).
        ``backbone``: only the runs whose selection was made on these features (the
        selections' ``backbone``), not the means of two feature sets of one data set."""
        groups: dict[tuple, list[float]] = {}
        for run in self.runs():
            metrics = run.get("metrics")
            top1 = metrics.get("top1") if isinstance(metrics, dict) else None
            if (run["dataset"] == dataset and backbone in (None, run["backbone"]) and run["status"] == "completed"
                    and top1 is not None):
                groups.setdefault((run["protocol"], run_method(run), run["budget"]), []).append(float(top1))
        return [{"protocol": protocol, "method": method, "budget": budget, "mean": float(np.mean(values)),
                 "std": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"), "count": len(values)}
                for (protocol, method, budget), values in sorted(groups.items())]

    def reap_stale(self) -> int:
        """Mark ``running`` runs of dead processes on this host ``failed``; returns how many."""
        host = socket.gethostname()
        stale = [row["id"] for row in self._read("SELECT id, pid FROM runs WHERE status = 'running' AND host = ?",
                                                 (host,)) if not _pid_alive(row["pid"])]
        for run_id in stale:
            self.finish_run(run_id, status="failed", error="the process running it ended without finishing it "
                                                          "(killed or crashed); run it again to resume")
        return len(stale)


def run_method(run: dict) -> str:
    """The method a run's selection names (a record of :meth:`RunStore.runs`), with
    " + marks" where the selection was edited by hand before training: its ``params`` hold
    ``marks`` ("-2+3": samples taken out, samples added; written by the app's Finetune
    page), so those picks are not the method's own."""
    params = run.get("selection_params")
    marked = isinstance(params, dict) and bool(params.get("marks"))
    return f"{run.get('method')} + marks" if marked else str(run.get("method"))


class TrackedRun:
    """Handle of a run inside :meth:`RunStore.track`: report progress, set metrics."""

    def __init__(self, store: RunStore, run_id: int):
        self.store, self.id, self.metrics = store, run_id, {}
        self._last_write = 0.0

    def progress(self, fraction: float, message: str = "") -> None:
        """Store progress at most twice a second (a training loop calls this per batch)."""
        now = time.monotonic()
        if now - self._last_write >= 0.5 or fraction >= 1.0:
            self._last_write = now
            self.store.update_run(self.id, progress=fraction, message=message, metrics=self.metrics or None)


def _decode(row: dict) -> dict:
    for key in ("params", "selection_params", "sample_ids", "indices", "metrics", "versions"):
        if key in row and isinstance(row[key], str):
            row[key] = json.loads(row[key])
    return row
