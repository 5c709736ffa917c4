"""The selection map: a WebGL scatter with one legend entry (toggle) per layer."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from bilaf_core import Selection

# role -> (marker symbol, size, colour); drawn bottom to top
LAYERS = {
    "removed": ("x", 5, "rgba(95, 99, 104, 0.55)"),  # light: it can be a large share of the pool
    "selected": ("circle-open", 10, "#d62728"),
    "boundary": ("circle-open", 10, "#d62728"),
    "core": ("star", 14, "#111111"),
}


def _hover(i: int, ids, labels, selection: Selection, position: np.ndarray, class_names) -> str:
    label = "" if labels is None else f"<br>label {class_names[labels[i]] if class_names else labels[i]}"
    text = f"{ids[i]}{label}<br>role {selection.role[i]} · cluster {selection.cluster[i]}"
    p = position[i]
    if p >= 0 and not np.isnan(selection.boundary_score[p]):
        text += f"<br>boundary score {selection.boundary_score[p]:.3f} · opponent cluster {selection.opponent[p]}"
    return text


def selection_figure(coords: np.ndarray, selection: Selection, *, ids, labels=None, class_names=(),
                     color_by: str = "pseudo-class", height: int = 560, show_legend: bool = True) -> go.Figure:
    """Pool samples faint (coloured by pseudo-class or true label), then the removed
    noise (crosses), boundary picks (circles) and cores (stars) on top.

    Every trace carries the feature-set row of each point in ``customdata``, so a
    lasso or box selection on the map maps back to samples.
    """
    n = coords.shape[0]
    position = np.full(n, -1)
    position[selection.indices] = np.arange(selection.indices.size)
    if color_by == "true label" and labels is not None:
        colour = labels
    else:
        colour = selection.cluster if (selection.cluster >= 0).any() else np.zeros(n)
    everyone = np.arange(n)
    fig = go.Figure()
    # Hover text for the whole pool would be heavy at 50k points; the pool shows ids only.
    fig.add_trace(go.Scattergl(x=coords[:, 0], y=coords[:, 1], mode="markers", name="pool",
                               marker=dict(size=4, color=colour, colorscale="Turbo", opacity=0.28),
                               customdata=everyone, hovertext=np.asarray(ids), hoverinfo="text"))
    for role, (symbol, size, col) in LAYERS.items():
        idx = np.flatnonzero(selection.role == role)
        if idx.size == 0:
            continue
        fig.add_trace(go.Scattergl(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=f"{role} ({idx.size})",
            marker=dict(symbol=symbol, size=size, color=col, line=dict(width=1.5, color=col)),
            customdata=idx, hoverinfo="text",
            hovertext=[_hover(i, ids, labels, selection, position, class_names) for i in idx]))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), showlegend=show_legend,
                      legend=dict(orientation="h", y=1.02), dragmode="lasso",
                      xaxis=dict(showticklabels=False, title=None), yaxis=dict(showticklabels=False, title=None))
    return fig
