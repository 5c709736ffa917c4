"""Exports of a selection for labelling: a table (CSV / JSON) and a Label Studio
import file. Manual marks are applied here: excluded samples leave the export, forced
ones join it with the role ``forced``."""

from __future__ import annotations

import json
from urllib.parse import quote

import numpy as np
import pandas as pd

from .selection import Selection

__all__ = ["exported_indices", "marks_change", "selection_table", "to_csv", "to_json", "to_label_studio"]


def _marked(picked: np.ndarray, excluded, forced) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``picked`` stay (a mask) and the forced rows added after them, sorted."""
    keep = ~np.isin(picked, list(excluded)) if excluded else np.ones(picked.size, dtype=bool)
    extra = np.array(sorted(set(forced) - set(picked.tolist()) - set(excluded)), dtype=np.int64)
    return keep, extra


def exported_indices(
    selection: Selection,
    *,
    excluded: set[int] | frozenset[int] = frozenset(),
    forced: set[int] | frozenset[int] = frozenset(),
) -> np.ndarray:
    """The rows an export with these manual marks holds, in its order: the selection's
    indices less the ``excluded`` rows, then the ``forced`` rows it lacks (sorted); shape
    ``(n_exported,)``. The samples that get labelled, so the ones a training run uses."""
    keep, extra = _marked(selection.indices, excluded, forced)
    return np.concatenate((selection.indices[keep], extra))


def marks_change(selection: Selection, exported: np.ndarray) -> tuple[int, int]:
    """How the manual marks changed the selection: (samples taken out, samples added) in
    ``exported`` (rows, from :func:`exported_indices`) against ``selection.indices``."""
    kept = int(np.isin(exported, selection.indices).sum())
    return int(selection.indices.size) - kept, int(np.asarray(exported).size) - kept


def selection_table(
    selection: Selection,
    ids: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    excluded: set[int] | frozenset[int] = frozenset(),
    forced: set[int] | frozenset[int] = frozenset(),
) -> pd.DataFrame:
    """One row per exported sample, in selection order (forced samples last).

    Columns: ``index`` (row in the feature set), ``id``, ``order``, ``role``,
    ``cluster``, ``boundary_score``, ``opponent`` and ``label`` when labels are given.
    """
    picked = selection.indices
    keep, extra = _marked(picked, excluded, forced)
    index = np.concatenate((picked[keep], extra))
    table = pd.DataFrame({
        "index": index,
        "id": np.asarray(ids)[index],
        "order": np.arange(index.size),
        "role": np.concatenate((selection.role[picked[keep]], np.full(extra.size, "forced"))),
        "cluster": selection.cluster[index],
        "boundary_score": np.concatenate((selection.boundary_score[keep], np.full(extra.size, np.nan))),
        "opponent": np.concatenate((selection.opponent[keep], np.full(extra.size, -1))),
    })
    if labels is not None:
        table["label"] = np.asarray(labels)[index]
    return table


def to_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False)


def to_json(table: pd.DataFrame, params: dict, *, provenance: dict | None = None,
            marks: dict[str, list[str]] | None = None) -> str:
    """``{"params": ..., "provenance": ..., "marks": ..., "samples": [...]}``; ``provenance``
    says where the selection came from (data source, features), ``marks`` the manual marks
    applied (``{"excluded": [ids], "forced": [ids]}``: the excluded samples are in no row,
    so the file alone tells how the export differs from ``params``' selection); each is left
    out when not given."""
    records = json.loads(table.to_json(orient="records"))
    about = {} if provenance is None else {"provenance": provenance}
    if marks is not None:
        about["marks"] = {kind: sorted(map(str, marks.get(kind, ()))) for kind in ("excluded", "forced")}
    return json.dumps({"params": params, **about, "samples": records}, indent=1)


def to_label_studio(table: pd.DataFrame, *, image_root: str = "") -> str:
    """Label Studio tasks for images served by its local-files storage: each task's
    ``image`` is ``/data/local-files/?d=<image_root>/<id>``, with the selection's role,
    cluster and score in the task data for filtering."""
    prefix = image_root.rstrip("/") + "/" if image_root else ""
    tasks = [
        {"data": {"image": f"/data/local-files/?d={quote(prefix + str(row.id))}", "id": str(row.id),
                  "role": str(row.role), "cluster": int(row.cluster),
                  "boundary_score": None if np.isnan(row.boundary_score) else float(row.boundary_score)}}
        for row in table.itertuples(index=False)
    ]
    return json.dumps(tasks, indent=1)
