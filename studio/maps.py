"""The selection map: a WebGL scatter with one legend entry (toggle) per layer."""

from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go

from bilaf_core import Selection

#: The faint pool layer draws at most this many points (a fixed seeded subset, so it
#: does not flicker between reruns); selected and removed samples are always all drawn.
#: Re-drawing 50,000 WebGL points on every slider move is what made the map slow.
POOL_POINTS_SHOWN = 10_000


def shown_pool(n: int) -> np.ndarray:
    """Rows drawn in the pool layer: all of them up to POOL_POINTS_SHOWN, else a seeded subset."""
    if n <= POOL_POINTS_SHOWN:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, POOL_POINTS_SHOWN, replace=False))


# role -> (marker symbol, largest size, colour); drawn bottom to top
LAYERS = {
    "removed": ("x", 5, "rgba(95, 99, 104, 0.55)"),  # light: it can be a large share of the pool
    "selected": ("circle-open", 10, "#d62728"),
    "boundary": ("circle-open", 10, "#d62728"),
    "core": ("star", 14, "#111111"),
}
#: An overlay keeps its largest marker size up to this many points; beyond, the size
#: shrinks with 1 / sqrt(count) (the area each point may cover), down to MIN_MARKER.
FULL_SIZE_POINTS = 60
MIN_MARKER = 4.0
#: The map height the LAYERS sizes are meant for; smaller maps (Compare's small
#: multiples) scale their markers down with their height.
FULL_HEIGHT = 560


def overlay_marker_size(largest: float, count: int, *, height: int = FULL_HEIGHT) -> float:
    """Marker size of an overlay of ``count`` points on a map ``height`` pixels high:
    ``largest`` for a few dozen (50 cores) on a full-size map, shrinking as 1 / sqrt(count)
    so thousands of picks (a whole-budget baseline's 2,500 cores) stay points on the pool
    instead of one blob, and with the map's height; never below MIN_MARKER."""
    scale = min(1.0, height / FULL_HEIGHT) * min(1.0, np.sqrt(FULL_SIZE_POINTS / max(count, 1)))
    return float(max(MIN_MARKER, largest * scale))


def row_id_format(ids) -> str | None:
    """``"<prefix>%{customdata:0<w>d}"`` when every id is a fixed prefix and its row
    number zero-padded to w digits (every built-in pool, and feature files without ids),
    so hover labels print ids from the row numbers plotly already has; None otherwise.
    It keeps about 300 KB of id strings out of every map sent at CIFAR scale."""
    ids = np.asarray(ids).astype(str)
    match = re.fullmatch(r"(.*?)(0+)", ids[0]) if ids.size else None
    if match is None or re.search(r"[%{}<>&]", match.group(1)):
        return None
    prefix, width = match.group(1), len(match.group(2))
    expected = np.char.add(prefix, np.char.zfill(np.arange(ids.size).astype(str), width))
    return f"{prefix}%{{customdata:0{width}d}}" if np.array_equal(ids, expected) else None


def _hovertemplate(role: str, has_labels: bool, id_format: str | None) -> str:
    """Hover of an overlay layer, filled by plotly from ``customdata`` columns (row,
    cluster, label[, boundary score, opponent]): no per-point strings to build or send."""
    sample = "%{text}" if id_format is None else id_format.replace("customdata", "customdata[0]")
    text = sample + ("<br>label %{customdata[2]}" if has_labels else "") + f"<br>role {role} · cluster %{{customdata[1]}}"
    if role == "boundary":
        text += "<br>boundary score %{customdata[3]:.3f} · opponent cluster %{customdata[4]}"
    return text + "<extra></extra>"


def selection_figure(coords: np.ndarray, selection: Selection, *, ids, labels=None,
                     color_by: str = "pseudo-class", height: int = FULL_HEIGHT, show_legend: bool = True) -> go.Figure:
    """Pool samples faint (coloured by pseudo-class or true label), then the removed
    noise (crosses), boundary picks (circles) and cores (stars) on top.

    Every trace carries the feature-set row of each point in ``customdata``, so a lasso
    or box selection maps back to samples (:func:`picked_rows`). Above
    :data:`POOL_POINTS_SHOWN` pool samples the pool layer draws a fixed subset, named so
    in its legend entry.
    """
    n = coords.shape[0]
    if labels is not None:
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.number):  # class names: drawn by their codes
            labels = np.unique(labels, return_inverse=True)[1]
    if color_by == "true label" and labels is not None:
        colour = labels
    else:
        colour = selection.cluster if (selection.cluster >= 0).any() else np.zeros(n)
    pool = shown_pool(n)
    fig = go.Figure()
    colour_name = "label" if color_by == "true label" and labels is not None else "cluster"
    # Row numbers as customdata and ids as text (or printed from the rows), no per-point
    # hover strings: every layer is re-sent on every rerun, so it is kept lean.
    id_format = row_id_format(ids)

    def id_text(rows: np.ndarray):
        return None if id_format is not None else np.asarray(ids)[rows]

    fig.add_trace(go.Scattergl(
        x=coords[pool, 0], y=coords[pool, 1], mode="markers",
        name="pool" if pool.size == n else f"pool ({pool.size:,} of {n:,} drawn)",
        marker=dict(size=4, color=colour[pool], colorscale="Turbo", opacity=0.28, showscale=show_legend,
                    # explicit ends: one cluster (K = 1) would otherwise label its bar 0.999999998
                    cmin=float(np.min(colour)), cmax=float(max(np.max(colour), np.min(colour) + 1)),
                    colorbar=dict(title=dict(text=colour_name, side="right"), thickness=10, len=0.7,
                                  tickformat="d", outlinewidth=0, tick0=0,
                                  dtick=max(1, int(np.ceil((np.max(colour) - np.min(colour)) / 10))))),
        customdata=pool, text=id_text(pool),
        hovertemplate=f"{id_format or '%{text}'}<br>{colour_name} %{{marker.color}}<extra>pool</extra>"))
    score, opponent = np.full(n, np.nan), np.full(n, -1.0)
    score[selection.indices], opponent[selection.indices] = selection.boundary_score, selection.opponent
    label_column = np.full(n, -1.0) if labels is None else np.asarray(labels, dtype=np.float64)
    for role, (symbol, size, col) in LAYERS.items():
        idx = np.flatnonzero(selection.role == role)
        if idx.size == 0:
            continue
        shown = overlay_marker_size(size, idx.size, height=height)
        fig.add_trace(go.Scattergl(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=f"{role} ({idx.size})",
            marker=dict(symbol=symbol, size=shown, color=col, line=dict(width=1.5 if shown >= 8 else 1, color=col)),
            customdata=np.column_stack((idx, selection.cluster[idx], label_column[idx])
                                       + ((score[idx], opponent[idx]) if role == "boundary" else ())).astype(np.float32),
            text=id_text(idx), hovertemplate=_hovertemplate(role, labels is not None, id_format)))
    # The legend goes under the map: above it, plotly's toolbar would cover it.
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0), showlegend=show_legend,
                      legend=dict(orientation="h", y=-0.02, yanchor="top", x=0), dragmode="lasso",
                      xaxis=dict(showticklabels=False, title=None), yaxis=dict(showticklabels=False, title=None))
    return fig


def picked_rows(points: list[dict]) -> np.ndarray:
    """Feature-set rows of the points a plotly selection event reports, ascending.

    A point's ``customdata`` is its row (the pool layer) or a row of columns whose first
    is the row (overlay layers). Plotly sends numeric arrays as typed arrays, and a typed
    array reaches Python as a dict of its positions (``{"0": row, "1": cluster, ...}``).
    """
    rows = set()
    for point in points:
        data = point.get("customdata")
        if isinstance(data, dict):
            data = data.get("0")
        elif isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if data is not None:
            rows.add(int(data))
    return np.array(sorted(rows), dtype=np.int64)
