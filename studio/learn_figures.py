"""Figures of the Learn page: BiLAF's steps drawn on 2-D points (plotly). They only
draw what :mod:`bilaf_core.teaching` and the stage-2 trace return."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from bilaf_core.boundary import boundary_score_at
from bilaf_core.teaching import Walkthrough, region_extent, region_grid

from .maps import MARKERS, TOOLBAR

PALETTE = qualitative.Light24
HEIGHT = 560
#: The legend under the plot, left-aligned, in rows: above the plot it sat on plotly's
#: toolbar (its icons at the top right); at y = -0.05 it covered the x axis' numbers, so
#: it starts ~50 px under the plot area (0.1 of its ~490 px), clear of them.
LEGEND_BELOW = dict(orientation="h", x=0, xanchor="left", y=-0.1, yanchor="top")
#: Step 2's round slider sits where that legend would (under the axis' numbers): the
#: legend goes under the slider.
SLIDER_Y, LEGEND_UNDER_SLIDER = -0.08, -0.4


def _cluster_colour(c: int) -> str:
    return PALETTE[c % len(PALETTE)]


def _frame(fig: go.Figure, points: np.ndarray, *, legend_y: float = LEGEND_BELOW["y"]) -> go.Figure:
    # the legend under the plot (LEGEND_BELOW); plotly widens the bottom margin to hold it
    fig.update_layout(height=HEIGHT, margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white",
                      legend={**LEGEND_BELOW, "y": legend_y})
    # Every step over the plane the shaded regions cover (region_extent), one unit as long on
    # both axes: the plot area shrinks to fit (constrain="domain"); an axis widened its range
    # past the regions instead (x from -10 beside regions from -8).
    low, high = region_extent(points)
    fig.update_xaxes(showgrid=False, zeroline=False, range=[low[0], high[0]], constrain="domain")
    fig.update_yaxes(showgrid=False, zeroline=False, range=[low[1], high[1]], scaleanchor="x", scaleratio=1,
                     constrain="domain")
    return fig


def _cores(run: Walkthrough, *, name: str = "cores") -> go.Scatter:
    return go.Scatter(x=run.core_points[:, 0], y=run.core_points[:, 1], mode="markers+text", name=name,
                      text=[str(c) for c in range(run.cores.size)], textposition="top center",
                      marker=MARKERS["core"].style(run.cores.size),
                      hovertemplate="core of cluster %{text}<extra></extra>")


def regions_figure(run: Walkthrough) -> go.Figure:
    """Step 1: cores (stars) and the pseudo-class regions (nearest core)."""
    xs, ys, grid = region_grid(run.points, run.core_points)
    k = run.cores.size
    scale = [[i / max(1, k - 1), _cluster_colour(i)] for i in range(k)] if k > 1 else [[0, PALETTE[0]], [1, PALETTE[0]]]
    fig = go.Figure(go.Heatmap(x=xs, y=ys, z=grid, colorscale=scale, opacity=0.25, showscale=False,
                               hovertemplate="region of cluster %{z}<extra></extra>"))
    labels = run.result.labels
    fig.add_trace(go.Scatter(x=run.points[:, 0], y=run.points[:, 1], mode="markers", name="samples",
                             marker=dict(size=5, color=[_cluster_colour(c) for c in labels]),
                             customdata=labels, hovertemplate="sample %{pointNumber} · cluster %{customdata}<extra></extra>"))
    fig.add_trace(_cores(run))
    return _frame(fig, run.points)


def idc_figure(run: Walkthrough, cluster: int | None = None) -> go.Figure:
    """Step 2: every sample coloured by the IDC round that included it; the removed
    periphery as crosses. One animation frame per round (play). With ``cluster``, only
    that cluster's IDC (the one the page's text follows); the others faint."""
    n = run.points.shape[0]
    rounds = np.zeros(n, dtype=np.int64)
    removed = np.zeros(n, dtype=bool)
    for c, trace in enumerate(run.result.traces):
        if cluster is None or c == cluster:
            rounds[trace.inclusion_order] = trace.inclusion_round
            removed[trace.removed] = True
    last = int(rounds.max(initial=1))
    others = np.zeros(n, dtype=bool)
    if cluster is not None:
        others[:] = True
        others[run.result.traces[cluster].members] = False

    def traces_upto(r: int) -> list:
        shown = (rounds >= 1) & (rounds <= r)
        kept, gone = shown & ~removed, shown & removed
        return [
            go.Scatter(x=run.points[others, 0], y=run.points[others, 1], mode="markers", name="other clusters",
                       marker=dict(size=4, color="#eeeeee"), hoverinfo="skip", showlegend=bool(others.any())),
            go.Scatter(x=run.points[~shown & ~others, 0], y=run.points[~shown & ~others, 1], mode="markers",
                       name="not yet included", marker=dict(size=4, color="#c0c0c0"), hoverinfo="skip"),
            go.Scatter(x=run.points[kept, 0], y=run.points[kept, 1], mode="markers", name="included (kept)",
                       marker=dict(size=6, color=rounds[kept], colorscale="Viridis", cmin=1, cmax=last,
                                   colorbar=dict(title="round", len=0.6)),
                       customdata=rounds[kept], hovertemplate="included in round %{customdata}<extra></extra>"),
            go.Scatter(x=run.points[gone, 0], y=run.points[gone, 1], mode="markers", name="removed (periphery)",
                       marker=MARKERS["removed"].style(int(gone.sum())), customdata=rounds[gone],
                       hovertemplate="removed; ranked in round %{customdata}<extra></extra>"),
            _cores(run),
        ]

    fig = go.Figure(traces_upto(last), frames=[go.Frame(data=traces_upto(r), name=str(r)) for r in range(1, last + 1)])
    fig.update_layout(
        # the play button under the toolbar's row (a narrow window's toolbar spans the width)
        updatemenus=[dict(type="buttons", x=0, y=1.01, yanchor="bottom", direction="left", buttons=[
            dict(label="▶ play rounds", method="animate",
                 args=[None, dict(frame=dict(duration=500, redraw=True), fromcurrent=False)])])],
        sliders=[dict(active=last - 1, currentvalue=dict(prefix="round "), y=SLIDER_Y, yanchor="top", pad=dict(t=0),
                      steps=[dict(label=str(r), method="animate", args=[[str(r)], dict(mode="immediate")])
                             for r in range(1, last + 1)])])
    _frame(fig, run.points, legend_y=LEGEND_UNDER_SLIDER)  # the round slider under the plot, the legend under it
    return fig.update_layout(margin_t=TOOLBAR + 40)


def score_field(run: Walkthrough, cluster: int, *, penalty: float, counts: np.ndarray | None = None,
                resolution: int = 90):
    """Eq. 7 of ``cluster`` over its own region of the plane, and at its denoised members."""
    trace = run.result.traces[cluster]
    members = run.points[trace.kept]
    xs, ys, grid = region_grid(run.points, run.core_points, resolution=resolution)
    cells = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    field = boundary_score_at(cells, members, run.core_points, cluster, opponent_penalty=penalty,
                              penalty_counts=counts)["score"].reshape(grid.shape)
    field[grid != cluster] = np.nan  # a cluster scores only its own members
    at_members = boundary_score_at(members, members, run.core_points, cluster, opponent_penalty=penalty,
                                   penalty_counts=counts)
    return xs, ys, field, at_members


def score_figure(run: Walkthrough, cluster: int, *, penalty: float) -> go.Figure:
    """Step 3: the boundary-score field of one cluster (lower = nearer a boundary)."""
    xs, ys, field, at = score_field(run, cluster, penalty=penalty)
    trace = run.result.traces[cluster]
    members = run.points[trace.kept]
    fig = go.Figure(go.Heatmap(x=xs, y=ys, z=field, colorscale="RdBu", reversescale=False, opacity=0.75,
                               colorbar=dict(title="BS", len=0.6), hovertemplate="BS %{z:.3f}<extra></extra>",
                               hoverongaps=False))  # outside the cluster z is NaN: no "BS NaN" label
    others = np.setdiff1d(np.arange(run.points.shape[0]), trace.kept)
    fig.add_trace(go.Scatter(x=run.points[others, 0], y=run.points[others, 1], mode="markers", name="other samples",
                             marker=dict(size=4, color="#bbbbbb"), hoverinfo="skip"))
    custom = np.column_stack((trace.kept, at["d_intra"], at["opponent"], at["opponent_distance"], at["score"]))
    fig.add_trace(go.Scatter(
        x=members[:, 0], y=members[:, 1], mode="markers", name=f"denoised members of cluster {cluster}",
        marker=dict(size=7, color=at["score"], colorscale="RdBu", line=dict(width=0.5, color="#333"), showscale=False),
        customdata=custom,
        hovertemplate=("sample %{customdata[0]:.0f}<br>d_intra = %{customdata[1]:.3f}<br>opponent l = cluster "
                       "%{customdata[2]:.0f}, D(x, c_l) = %{customdata[3]:.3f}<br>BS = (D - d_intra) / max(D, "
                       "d_intra) = %{customdata[4]:.3f}<extra></extra>")))
    fig.add_trace(_cores(run))
    return _frame(fig, run.points)


def picks_table(run: Walkthrough, cluster: int) -> list[dict]:
    """Step 4's table: each pick with its score, opponent and the penalty counts t_l
    in force when it was scored (the opponents of the earlier picks). The one-shot
    process and the distance criterion apply no penalty: the column says so."""
    trace = run.result.traces[cluster]
    no_penalty = ("none (one-shot process)" if run.params.get("process") == "one_shot"
                  else "none (distance criterion)" if run.params.get("criterion") == "distance" else None)
    counts: dict[int, int] = {}
    rows = [{"pick": 0, "sample": trace.core, "BS": None, "opponent": None, "dropped before": 0,
             "t_l in force": None}]
    for j, pick in enumerate(trace.picks, start=1):
        in_force = no_penalty or ", ".join(f"t{l}={t}" for l, t in sorted(counts.items())) or "all 0"
        rows.append({"pick": j, "sample": int(trace.kept[pick.position]), "BS": round(pick.score, 4),
                     "opponent": pick.opponent, "dropped before": int(pick.dropped.size), "t_l in force": in_force})
        if pick.opponent >= 0:
            counts[pick.opponent] = counts.get(pick.opponent, 0) + 1
    return rows


def picks_figure(run: Walkthrough, cluster: int, upto: int) -> go.Figure:
    """Step 4: the first ``upto`` picks of one cluster in order; the removal radius of
    the last shown pick's predecessor drawn as a circle around it, what it dropped."""
    trace = run.result.traces[cluster]
    members = run.points[trace.kept]
    picks = trace.picks[:upto]
    dropped = np.concatenate([p.dropped for p in picks]) if picks else np.empty(0, dtype=np.int64)
    fig = go.Figure()
    others = np.setdiff1d(np.arange(run.points.shape[0]), trace.kept)
    fig.add_trace(go.Scatter(x=run.points[others, 0], y=run.points[others, 1], mode="markers", name="other clusters",
                             marker=dict(size=4, color="#dddddd"), hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=members[:, 0], y=members[:, 1], mode="markers", name="candidates",
                             marker=dict(size=6, color="#9ecae1"), hoverinfo="skip"))
    if dropped.size:
        fig.add_trace(go.Scatter(x=members[dropped, 0], y=members[dropped, 1], mode="markers",
                                 name="dropped by a removal radius", marker=dict(symbol="x", size=6, color="#7f7f7f"),
                                 hoverinfo="skip"))
    chosen = [int(np.flatnonzero(trace.kept == trace.core)[0])] + [p.position for p in picks]
    fig.add_trace(go.Scatter(x=members[chosen, 0], y=members[chosen, 1], mode="markers+text+lines", name="picks in order",
                             text=[str(i) for i in range(len(chosen))], textposition="top right",
                             line=dict(color="rgba(214, 39, 40, 0.35)", dash="dot"),
                             marker=MARKERS["boundary"].style(len(chosen)),
                             hovertemplate="pick %{text}<extra></extra>"))
    if picks and picks[-1].dropped.size:
        centre = members[chosen[-2]]
        radius = float(np.max(np.linalg.norm(members[picks[-1].dropped] - centre, axis=1)))
        fig.add_shape(type="circle", x0=centre[0] - radius, y0=centre[1] - radius, x1=centre[0] + radius,
                      y1=centre[1] + radius, line=dict(color="#d62728", dash="dash"))
    fig.add_trace(_cores(run))
    return _frame(fig, run.points)


def comparison_figure(points: np.ndarray, picks: dict[str, Walkthrough | np.ndarray]) -> go.Figure:
    """Step 5: each method's picks with the same budget, side by side, in the maps' markers
    (:data:`studio.maps.MARKERS`): BiLAF (a :class:`Walkthrough`) its cores as stars, its
    boundary picks as circles and its removed noise as crosses; a whole-budget method (an
    index array) its picks as stars, as on the Select and Compare maps."""
    names = list(picks)
    cols = 2
    fig = make_subplots(rows=(len(names) + 1) // cols, cols=cols, subplot_titles=names, horizontal_spacing=0.04,
                        vertical_spacing=0.08)
    legend, panel = set(), 380  # each panel's height: markers sized as on Compare's small maps
    for i, name in enumerate(names):
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(go.Scatter(x=points[:, 0], y=points[:, 1], mode="markers", marker=dict(size=3, color="#cccccc"),
                                 showlegend=False, hoverinfo="skip"), row=row, col=col)
        run = picks[name]
        if isinstance(run, Walkthrough):
            cores = run.cores
            layers = [("removed", run.result.removed), ("boundary", np.setdiff1d(run.result.indices, cores)),
                      ("core", cores)]
        else:
            layers = [("selected", np.asarray(run))]
        for role, chosen in layers:
            if chosen.size == 0:
                continue
            label = {"core": "cores", "selected": "picks"}.get(role, role)
            fig.add_trace(go.Scatter(x=points[chosen, 0], y=points[chosen, 1], mode="markers",
                                     name=f"{label} ({chosen.size})", marker=MARKERS[role].style(chosen.size, height=panel),
                                     customdata=chosen.tolist(), showlegend=role not in legend,
                                     hovertemplate=f"sample %{{customdata}} · {role}<extra></extra>"), row=row, col=col)
            legend.add(role)
    fig.update_layout(height=panel * ((len(names) + 1) // cols), margin=dict(l=10, r=10, t=TOOLBAR + 26, b=10),
                      plot_bgcolor="white", legend={**LEGEND_BELOW, "y": -0.02})  # no axis numbers here
    fig.update_xaxes(showgrid=False, zeroline=False, showticklabels=False)
    fig.update_yaxes(showgrid=False, zeroline=False, showticklabels=False)
    return fig


def variants_figure(points: np.ndarray, paper: Walkthrough, reference: Walkthrough) -> go.Figure:
    """Paper vs reference on the same data and cores: samples selected by one only,
    and samples the reference drops as IDC leftovers (never selectable)."""
    a, b = set(paper.result.indices.tolist()), set(reference.result.indices.tolist())
    dropped = set()
    for trace in reference.result.traces:
        dropped |= set(np.setdiff1d(trace.members, trace.inclusion_order).tolist())
    fig = go.Figure(go.Scatter(x=points[:, 0], y=points[:, 1], mode="markers", name="pool",
                               marker=dict(size=4, color="#d5d5d5"), hoverinfo="skip"))
    for name, group, style in (
        ("selected by both", sorted(a & b), dict(color="#2ca02c", symbol="circle-open", size=9)),
        ("paper only", sorted(a - b), dict(color="#1f77b4", symbol="circle", size=10)),
        ("reference only", sorted(b - a), dict(color="#ff7f0e", symbol="diamond", size=10)),
        ("reference drops (IDC leftovers)", sorted(dropped), MARKERS["removed"].style(len(dropped))),
    ):
        if group:
            fig.add_trace(go.Scatter(x=points[group, 0], y=points[group, 1], mode="markers", name=f"{name} ({len(group)})",
                                     marker=style, customdata=group, hovertemplate="sample %{customdata}<extra></extra>"))
    fig.add_trace(_cores(paper))
    return _frame(fig, points)
