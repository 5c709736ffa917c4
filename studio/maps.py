"""The selection map: a WebGL scatter with one legend entry (toggle) per layer."""

from __future__ import annotations

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


# role -> (marker symbol, size, colour); drawn bottom to top
LAYERS = {
    "removed": ("x", 5, "rgba(95, 99, 104, 0.55)"),  # light: it can be a large share of the pool
    "selected": ("circle-open", 10, "#d62728"),
    "boundary": ("circle-open", 10, "#d62728"),
    "core": ("star", 14, "#111111"),
}


def _hovertemplate(role: str, has_labels: bool) -> str:
    """Hover of an overlay layer, filled by plotly from ``customdata`` columns (row,
    cluster, label[, boundary score, opponent]): no per-point strings to build or send."""
    text = "%{text}" + ("<br>label %{customdata[2]}" if has_labels else "") + f"<br>role {role} · cluster %{{customdata[1]}}"
    if role == "boundary":
        text += "<br>boundary score %{customdata[3]:.3f} · opponent cluster %{customdata[4]}"
    return text + "<extra></extra>"


def selection_figure(coords: np.ndarray, selection: Selection, *, ids, labels=None,
                     color_by: str = "pseudo-class", height: int = 560, show_legend: bool = True) -> go.Figure:
    """Pool samples faint (coloured by pseudo-class or true label), then the removed
    noise (crosses), boundary picks (circles) and cores (stars) on top.

    Every trace carries the feature-set row of each point in ``customdata``, so a lasso
    or box selection maps back to samples (:func:`picked_rows`). Above
    :data:`POOL_POINTS_SHOWN` pool samples the pool layer draws a fixed subset, named so
    in its legend entry.
    """
    n = coords.shape[0]
    if color_by == "true label" and labels is not None:
        colour = labels
    else:
        colour = selection.cluster if (selection.cluster >= 0).any() else np.zeros(n)
    pool = shown_pool(n)
    fig = go.Figure()
    colour_name = "label" if color_by == "true label" and labels is not None else "cluster"
    # Row numbers as customdata and ids as text, no per-point hover strings: the pool
    # layer is re-sent on every rerun, so it is kept lean (binary arrays plus ids).
    fig.add_trace(go.Scattergl(
        x=coords[pool, 0], y=coords[pool, 1], mode="markers",
        name="pool" if pool.size == n else f"pool ({pool.size:,} of {n:,} drawn)",
        marker=dict(size=4, color=colour[pool], colorscale="Turbo", opacity=0.28),
        customdata=pool, text=np.asarray(ids)[pool],
        hovertemplate=f"%{{text}}<br>{colour_name} %{{marker.color}}<extra>pool</extra>"))
    score, opponent = np.full(n, np.nan), np.full(n, -1.0)
    score[selection.indices], opponent[selection.indices] = selection.boundary_score, selection.opponent
    label_column = np.full(n, -1.0) if labels is None else np.asarray(labels, dtype=np.float64)
    for role, (symbol, size, col) in LAYERS.items():
        idx = np.flatnonzero(selection.role == role)
        if idx.size == 0:
            continue
        fig.add_trace(go.Scattergl(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=f"{role} ({idx.size})",
            marker=dict(symbol=symbol, size=size, color=col, line=dict(width=1.5, color=col)),
            customdata=np.column_stack((idx, selection.cluster[idx], label_column[idx])
                                       + ((score[idx], opponent[idx]) if role == "boundary" else ())).astype(np.float32),
            text=np.asarray(ids)[idx], hovertemplate=_hovertemplate(role, labels is not None)))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), showlegend=show_legend,
                      legend=dict(orientation="h", y=1.02), dragmode="lasso",
                      xaxis=dict(showticklabels=False, title=None), yaxis=dict(showticklabels=False, title=None))
    return fig


def picked_rows(points: list[dict]) -> np.ndarray:
    """Feature-set rows of the points a plotly selection event reports, ascending."""
    rows = set()
    for point in points:
        data = point.get("customdata")
        if data is not None:
            rows.add(int(data[0]) if isinstance(data, (list, tuple)) else int(data))
    return np.array(sorted(rows), dtype=np.int64)
