"""The Select page's export section: the selection as CSV, JSON and Label Studio tasks,
with the pool's manual marks applied (and a way to clear them)."""

from __future__ import annotations

from dataclasses import asdict

import streamlit as st

from bilaf_core import Selection
from bilaf_core.export import marks_change, selection_table, to_csv, to_json, to_label_studio

from . import session, state
from .state import Source


def provenance(source: Source, fs, pool: session.PoolState) -> dict:
    """Where a selection came from: the data source, the features and the pool's fingerprint."""
    return {"data": source.label, "source": {k: v for k, v in asdict(source).items() if v},
            "features": fs.backbone, "n_pool": len(fs.ids), "pool_fingerprint": pool.key}


def marks_line(pool: session.PoolState, ids, *, key: str) -> None:
    """How many marks this pool has, with a button that clears them."""
    session.load_marks(pool, ids)
    if not pool.n_marks:
        return
    text, button = st.columns([4, 1], vertical_alignment="center")
    text.caption(f"Your marks on this pool: {len(pool.excluded)} excluded from the export, {len(pool.forced)} "
                 "forced into it.")
    button.button("Clear marks", on_click=session.clear_marks, args=(pool, ids), key=key)


def typed_ids(text: str) -> list[str]:
    """The sample ids typed in a text field: one per line or separated by commas, spaces
    around each ignored (an id may hold spaces: a file name), empty entries dropped."""
    return [part.strip() for line in text.splitlines() for part in line.split(",") if part.strip()]


def _count(count: int, what: str) -> str:
    """``count`` and ``what``, plural unless one: '1 forced sample', '89 excluded samples'."""
    return f"{count:,} {what}{'' if count == 1 else 's'}"


def marks_effect(result: Selection, exported) -> str | None:
    """What the marks did to the export (``exported``: its rows, from
    :func:`bilaf_core.export.exported_indices`), in counts; None when they changed nothing.
    (It gave the change in size, "the marks make the export 0 (-89)", and nothing where
    marks took out as many samples as they added.)"""
    taken_out, added = marks_change(result, exported)
    if not (taken_out or added):
        return None
    changes = ([f"take out {_count(taken_out, 'excluded sample')}"] if taken_out else []) \
        + ([f"add {_count(added, 'forced sample')}"] if added else [])
    export = "the export is empty" if not len(exported) else f"the export has {_count(len(exported), 'sample')}"
    return f"The selection has B = {result.budget:,}; your marks {' and '.join(changes)}: {export}."


def section(source: Source, fs, result: Selection, pool: session.PoolState) -> None:
    session.load_marks(pool, fs.ids)
    table = selection_table(result, fs.ids, fs.named_labels, excluded=pool.excluded, forced=pool.forced)
    st.subheader(f"Export ({_count(len(table), 'sample')})")
    effect = marks_effect(result, table["index"].to_numpy())
    if effect is not None:
        (st.warning if table.empty else st.caption)(effect)
    marks_line(pool, fs.ids, key="clear_marks_export")
    stem = f"{source.file_stem}_{result.params['method']}_{len(table)}"
    about = provenance(source, fs, pool)
    c1, c2, c3 = st.columns(3)
    # Files are built when a button is pressed (not on every slider move), and a press
    # does not rerun the page, so several downloads in a row all arrive.
    c1.download_button("CSV", lambda: to_csv(table), file_name=f"{stem}.csv", mime="text/csv", key="export_csv",
                       on_click="ignore")
    marks = {"excluded": fs.ids[sorted(pool.excluded)].tolist(), "forced": fs.ids[sorted(pool.forced)].tolist()} \
        if pool.n_marks else None
    c2.download_button("JSON", lambda: to_json(table, result.params, provenance=about, marks=marks),
                       file_name=f"{stem}.json", mime="application/json", key="export_json", on_click="ignore")
    if source.dataset == "folder":
        # An uploaded zip was unpacked into the app's cache: its tasks name the paths inside
        # the zip, for Label Studio's local-files storage pointed at the user's own copy.
        root = state.zip_prefix(source) if source.upload else source.root
        c3.download_button("Label Studio tasks", lambda: to_label_studio(table, image_root=root),
                           file_name=f"{stem}_label_studio.json", mime="application/json", key="export_ls",
                           on_click="ignore")
        if source.upload:
            c3.caption(f"Image paths are relative to the top of {source.upload}.")
    # The table is sent only while its expander is open (it has thousands of rows at CIFAR scale).
    selected_samples = st.expander("Selected samples", key="show_selected", on_change="rerun")
    if selected_samples.open:
        selected_samples.dataframe(table, hide_index=True, width="stretch", placeholder=state.NO_VALUE)
