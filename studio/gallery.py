"""Looking at samples: a map that can be lassoed, and a paged gallery (or table) of rows."""

from __future__ import annotations

import base64
import hashlib
import html
import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from bilaf_core import Selection

from . import maps, session, state

#: Images (or table rows) per gallery page.
PAGE_SIZE = 60
#: How many times the pool's map pick was cleared (:func:`clear_pick`): part of each map's key.
_PICK_ROUND = "pick_round"


def selectable_map(fig: go.Figure, name: str, pool: session.PoolState, *, drawn: tuple, coords: np.ndarray,
                   height: int | None = None, focus: np.ndarray | None = None) -> np.ndarray:
    """Draw ``fig`` with lasso, box and click selection; return the picked feature-set rows.
    The pick belongs to the pool: it is shown again when the page comes back. Where the
    pool is a density image (:func:`studio.maps.draws_density`), the pool rows (``coords``)
    inside the lasso or box are picked too: the image has no markers plotly could report.

    ``drawn`` names what the figure shows (selection parameters, projection, colouring):
    another value draws a new chart instead of updating the old one in place, because a
    lasso on a scattergl plot updated in place fails in plotly.js ("Cannot read
    properties of undefined (reading '_hoverlayer')") and selects nothing.

    A new chart (another ``drawn``, back from another page, a reload) draws the pool's pick
    as its selection (:func:`studio.maps.draw_pick`), the same pick for as long as the chart
    lives: a figure changed in place resets the chart's selection, which would read as an
    emptied pick. A lasso on it draws plotly's own selection over it; a cleared pick
    (:func:`clear_pick`) draws a new chart. ``focus``: the pool rows the map's filters keep
    (Inspect's), the only ones of the pick drawn over a density image."""
    digest = hashlib.sha256(repr((drawn, pool.values.get(_PICK_ROUND, 0))).encode()).hexdigest()[:12]
    key = session.chart_key(f"{name}_{digest}", pool)
    fresh = key not in st.session_state
    shown = st.session_state.setdefault("_map_pick_shown", {})
    seen = st.session_state.setdefault("_map_selection", {})
    if fresh:
        # what is kept per chart goes with the charts no longer drawn (a pick of 50,000 rows and
        # a lasso's points for each slider move added up over a session)
        for memo in (shown, seen):
            for gone in [k for k in memo if k not in st.session_state]:
                del memo[gone]
        shown[key] = pool.values.get("picked", np.empty(0, dtype=np.int64))
    maps.draw_pick(fig, shown[key], coords, focus=focus)
    if height is not None:
        fig.update_layout(height=height)
    event = st.plotly_chart(fig, width="stretch", key=key, on_select="rerun", selection_mode=("points", "box", "lasso"),
                            config={"displaylogo": False})
    # The pick changes only when this chart's own selection does (a lasso, a box, a click, a
    # double-click that empties it). A rerun the chart did not make (a gallery page, a
    # button) sends its unchanged selection, often none at all, where a pick came from
    # another page or was cleared by a button: it keeps the pool's pick.
    now = _selection_text(event)
    if fresh or seen.get(key) != now:
        seen[key] = now
        points = event.selection.get("points", []) if event is not None else []
        if points or not fresh:  # a fresh chart (back from another page, a reload) shows the pool's pick
            pool.values["picked"] = maps.picked_rows(points)
        if event is not None and maps.draws_density(coords.shape[0]):
            under = maps.rows_in_region(coords, event.selection)
            if under.size:
                pool.values["picked"] = np.union1d(pool.values.get("picked", np.empty(0, dtype=np.int64)), under)
    return pool.values.get("picked", np.empty(0, dtype=np.int64))


def _selection_text(event) -> str:
    """What a chart's selection event holds (points, box, lasso), to tell a new selection from a rerun's."""
    if event is None:
        return ""
    selection = event.selection
    return repr([selection.get(part, []) for part in ("points", "box", "lasso")])


def clear_pick_button(pool: session.PoolState, page: str) -> None:
    """The button that forgets the pool's map pick, on the Select and Inspect pages: a
    double-click clears only a pick plotly drew itself, not one drawn from the other page."""
    st.button("Clear the map pick", key=f"clear_pick_{page}", on_click=clear_pick, args=(pool,),
              help="Forget the samples picked on the map, on the Select and Inspect pages.")


def clear_pick(pool: session.PoolState) -> None:
    """Forget the pool's map pick (every page's map: it belongs to the pool); the maps are
    drawn anew, without the pick's selection and lasso outline."""
    pool.values["picked"] = np.empty(0, dtype=np.int64)
    pool.values[_PICK_ROUND] = pool.values.get(_PICK_ROUND, 0) + 1


def image_grid(images, captions: list[str], *, width: int = 112) -> None:
    """Thumbnails in a wrapping grid, each with its whole caption underneath: each caption
    line wraps at the image's width (a long id, a file path, breaks anywhere), never cut
    with an ellipsis; the caption is also the cell's tooltip. The images travel inside the page as PNG
    data, not as media files: a media file of a page that was left or rerun is deleted
    and a late request for it fails (404s in the browser's console). The width is set on
    each cell, not in the stylesheet: a page's stylesheets apply to every grid on it (the
    closer view's small neighbours took the gallery's width)."""
    cells = []
    for image, caption in zip(images, captions):
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(image)).save(buffer, format="PNG")
        data = base64.b64encode(buffer.getvalue()).decode()
        text = html.escape(caption)
        lines = "<br>".join(html.escape(line) for line in caption.split("\n"))
        cells.append(f'<figure class="bilaf-cell" style="width: {width}px" title="{text}">'
                     f'<img src="data:image/png;base64,{data}" alt="{text}" style="width: {width}px; height: {width}px">'
                     f'<figcaption class="bilaf-caption">{lines}</figcaption></figure>')
    st.html(f"""<style>
.bilaf-grid {{display: flex; flex-wrap: wrap; gap: 10px;}}
.bilaf-cell {{margin: 0;}}
.bilaf-cell img {{object-fit: contain; image-rendering: pixelated; border-radius: 4px; background: #f0f2f6;}}
.bilaf-caption {{font-size: 0.72rem; line-height: 1.25; color: #555; overflow-wrap: anywhere;}}
</style><div class="bilaf-grid">{"".join(cells)}</div>""")


def rows_table(rows: np.ndarray, result: Selection, ids: np.ndarray, labels: np.ndarray | None,
               marks: session.PoolState | None = None) -> pd.DataFrame:
    """id, label, role (as the map names it, :func:`studio.maps.layer_role`), cluster and
    boundary score of pool rows (the gallery's captions as a table), and each row's manual
    mark ("excluded" / "forced" from the export) where the pool ``marks`` has any."""
    score = np.full(ids.size, np.nan)
    score[result.indices] = result.boundary_score
    table = pd.DataFrame({"id": ids[rows], "role": [maps.layer_role(result, role) for role in result.role[rows]],
                          "cluster": result.cluster[rows], "boundary score": score[rows]})
    if labels is not None:
        table.insert(1, "label", labels[rows])
    if marks is not None and marks.n_marks:
        mark = session.row_marks(marks, ids)[rows]
        table["mark"] = np.where(mark == "unmarked", "", mark)
    return table


def show(rows: np.ndarray, result: Selection, fs, thumbs, *, key: str, closer=None,
         marks: session.PoolState | None = None) -> None:
    """A page of ``rows``: their images with id, label, role and score underneath, or, for a
    pool without images (a feature file), the same columns as a table; with ``marks``, each
    sample's manual mark too. ``closer`` (row -> None) draws the enlarged view of one of
    them, chosen under the grid."""
    if rows.size == 0:
        st.caption("Nothing to show.")
        return
    pages = -(-rows.size // PAGE_SIZE)
    page = 1
    if pages > 1:
        # No bounds: a number outside them only turned the input red (its range in a tooltip)
        # and kept the page shown; the warning below says which pages exist. A page asked for
        # outside them is moved into them before the field is drawn: the field kept 0 or 999
        # while page 1 or 30 was shown.
        field = f"{key}_page"
        asked = int(st.session_state.setdefault(field, 1))
        page = min(max(asked, 1), pages)
        if page != asked:
            st.session_state[field] = page
            st.warning(f"Page {asked:,} does not exist: there are pages 1 to {pages} ({rows.size:,} samples, "
                       f"{PAGE_SIZE} per page); showing page {page}.")
        st.number_input(f"Page (of {pages}, {PAGE_SIZE} per page)", step=1, key=field)
    shown = rows[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
    if marks is not None:
        session.load_marks(marks, fs.ids)  # read from disk once per session
    table = rows_table(shown, result, np.asarray(fs.ids), fs.named_labels, marks)
    if thumbs is None:
        st.dataframe(table, hide_index=True, width="stretch", placeholder=state.NO_VALUE,
                     column_config={"boundary score": st.column_config.NumberColumn(format="%.3f")})
    else:
        columns = [table["role"].astype(str), ["" if np.isnan(v) else f"BS {v:.3f}" for v in table["boundary score"]],
                   *([table["mark"]] if "mark" in table else [])]
        if "label" in table:
            columns.insert(0, "label " + table["label"].astype(str))
        # a caption wraps only between its parts ("label 5", "boundary", "BS 0.123"), not inside one
        captions = [f"{sample}\n" + " · ".join(part.replace(" ", "\u00a0") for part in parts if part)
                    for sample, *parts in zip(table["id"].astype(str), *columns)]
        image_grid([thumbs[i] for i in shown], captions)
    st.caption(f"{shown.size} of {rows.size:,} shown" + (f" (page {page} of {pages})" if pages > 1 else ""))
    if closer is not None:
        ids = np.asarray(fs.ids)
        chosen = st.selectbox("Look closer at", [None, *[int(i) for i in shown]], key=f"{key}_closer",
                              format_func=lambda i: "choose a sample of this page" if i is None else str(ids[i]))
        if chosen is not None:
            closer(chosen)


def closer_view(row: int, result: Selection, fs, image, coords: np.ndarray, neighbours: np.ndarray,
                thumbs=None) -> None:
    """One sample large, with its id, label, role and score, beside the map with it and its
    nearest neighbours in feature space highlighted."""
    left, right = st.columns([1, 2])
    table = rows_table(np.array([row, *neighbours]), result, np.asarray(fs.ids), fs.named_labels)
    first = table.iloc[0]
    caption = f"{first['id']} · " + (f"label {first['label']} · " if "label" in table else "") + \
        f"{first['role']} · cluster {first['cluster']}" + \
        ("" if np.isnan(first["boundary score"]) else f" · BS {first['boundary score']:.3f}")
    with left:
        if image is not None:
            st.image(image.resize((256, 256 * image.height // max(image.width, 1)), Image.NEAREST)
                     if image.width < 256 else image, caption=caption, width=256)
        else:
            st.markdown(caption)
        st.caption(f"Its {neighbours.size} nearest neighbours in feature space")
        if thumbs is not None:  # their images, with label and role
            image_grid([thumbs[i] for i in neighbours],
                       [f"{r['id']}\n" + (f"label {r['label']} · " if "label" in table else "") + str(r["role"])
                        for _, r in table.iloc[1:].iterrows()], width=72)
        else:
            st.dataframe(table.iloc[1:], hide_index=True, height=200, placeholder=state.NO_VALUE,
                         column_config={"boundary score": st.column_config.NumberColumn(format="%.3f")})
    with right:
        fig = go.Figure()
        fig.add_trace(go.Scattergl(x=coords[::max(1, coords.shape[0] // 5000), 0],
                                   y=coords[::max(1, coords.shape[0] // 5000), 1], mode="markers", name="pool",
                                   marker=dict(size=3, color="#c7c7c7"), hoverinfo="skip"))
        fig.add_trace(go.Scattergl(x=coords[neighbours, 0], y=coords[neighbours, 1], mode="markers",
                                   name=f"{neighbours.size} nearest", marker=dict(size=8, color="#1f77b4"),
                                   text=np.asarray(fs.ids)[neighbours], hovertemplate="%{text}<extra></extra>"))
        fig.add_trace(go.Scattergl(x=coords[[row], 0], y=coords[[row], 1], mode="markers", name=str(fs.ids[row]),
                                   marker=dict(symbol="star", size=16, color="#d62728"), hoverinfo="name"))
        fig.update_layout(height=380, margin=dict(l=0, r=0, t=maps.TOOLBAR, b=0), legend=dict(orientation="h", y=-0.02),
                          xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False))
        st.plotly_chart(fig, width="stretch", key=f"closer_map_{row}")
