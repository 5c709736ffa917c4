"""The selection map: the pool as a colour-coded layer (by pseudo-class or true label),
with one legend entry (toggle) per overlay layer (cores, boundary picks, removed noise).

Up to :data:`DENSITY_ABOVE` samples the pool is a WebGL scatter of small semi-transparent
points; above, a density image made on the server (:func:`density_rgba`): each pixel the
colour of its most frequent category, its opacity the log of its count. A 1,000,000-point
pool then costs one PNG of a few dozen KB instead of a million markers, and stays
readable. The lasso and the box still pick pool samples under that image: the page gives
the selection's region back to :func:`rows_in_region`, which finds every pool row inside.

Why not datashader (measured 2026-11-23, 2 shared cores, see the README): it adds six
packages (xarray, param, pyct, colorcet, multipledispatch, toolz; ~40 MB), 0.35-0.6 s of
import and 1.1 s for its first aggregation in a fresh process (numba), then 0.08 s per
1,000,000 points; its categorical shading blends colours, so the "dominant category" rule
would still be ours. The NumPy binning below takes 0.03 s per 1,000,000 points.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import io
import json
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from bilaf_core import Selection
from bilaf_core.selection import ROLES

#: Height of plotly's toolbar (modebar) at a figure's top: a map's plotting area starts under
#: it (a point at the top edge was hidden under the toolbar's icons), and so does what sits
#: above Learn's plots (step 2's play button, step 5's panel titles).
TOOLBAR = 30
#: Pools above this size are drawn as a server-side density image, not as markers.
DENSITY_ABOVE = 10_000
#: A full-size map draws at most this many points of one overlay (a role: the removed
#: noise, the boundary picks, a whole-budget method's picks): beyond, a fixed seeded subset,
#: named so in its legend entry ("removed (5,023; 5,000 drawn)"). A smaller map, and one of
#: several side by side (Compare's), draws fewer, by its area (:func:`drawn_at_most`): 2,450
#: circles and 5,000 crosses on a Compare panel were one red and grey mass. Lasso and box
#: pick every row regardless (the pool's own markers, or :func:`rows_in_region`).
OVERLAY_DRAWN = 5_000
#: (rows, columns) of the density image; the map stretches it over the pool's extent
#: (about 3 x 2 screen pixels per image pixel on the full-width Select map).
DENSITY_SHAPE = (240, 480)
#: How each projection method is named on the pages.
MAP_NAMES = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}
#: Category colours: ten well-separated ones up to ten categories (CIFAR-10's labels),
#: 24 beyond (pseudo-classes: they repeat past 24, far apart on the map; the legend says so).
#: None is grey: grey means removed noise (crosses) and samples outside Inspect's filters
#: (tab10's grey #7F7F7F is replaced by indigo).
PALETTE_10 = ("#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#393B79", "#BCBD22",
              "#17BECF")
PALETTE_MANY = ("#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#B68100", "#750D86", "#EB663B", "#511CFB",
                "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE", "#862A16", "#A777F1", "#620042",
                "#1616A7", "#DA60CA", "#6C4516", "#AF0038", "#17BECF", "#BCBD22")  # Dark24 less its near-blacks
#: Below this many samples per filled pixel the density image is smoothed (3 x 3).
SPARSE = 4
#: Pool samples outside Inspect's role / cluster filters.
OTHER = "#BDBDBD"

#: An overlay keeps its largest marker size up to this many points; beyond, the size
#: shrinks with 1 / sqrt(count) (the area each point may cover), down to MIN_MARKER.
FULL_SIZE_POINTS = 60
MIN_MARKER = 4.0
#: The map height the MARKERS sizes are meant for; smaller maps (Compare's small
#: multiples) scale their markers down with their height.
FULL_HEIGHT = 560


#: An overlay of more than this many points on a full-size map (on a smaller map, fewer:
#: the count is weighed by the map's area) is crowded: its markers, at their smallest,
#: would cover the pool (a whole-budget baseline's 2,500 picks on CIFAR-10 were a black
#: blob). Crowded, a filled symbol is drawn as its outline, 1 px, semi-transparent: the
#: more crowded, the more transparent (CROWDED_OPACITY up to 8 x CROWDED_POINTS, falling as
#: 1 / sqrt(count), down to LEAST_OPACITY).
CROWDED_POINTS = 300
CROWDED_OPACITY = 0.6
LEAST_OPACITY = 0.3


def _crowding(count: int, height: int) -> float:
    """``count`` against the most points a map ``height`` pixels high shows uncrowded."""
    return count / (CROWDED_POINTS * min(1.0, height / FULL_HEIGHT) ** 2)


def drawn_at_most(height: int = FULL_HEIGHT, columns: int = 1) -> int:
    """The most points of one overlay drawn on a map ``height`` pixels high, one of
    ``columns`` side by side: :data:`OVERLAY_DRAWN` by the map's area against a full-size map."""
    return max(1, int(OVERLAY_DRAWN * min(1.0, height / FULL_HEIGHT) ** 2 / max(columns, 1)))


def crowded(count: int, *, height: int = FULL_HEIGHT) -> bool:
    """Whether ``count`` overlay points on a map ``height`` pixels high are drawn crowded."""
    return _crowding(count, height) > 1


def crowded_opacity(count: int, *, height: int = FULL_HEIGHT) -> float:
    """The opacity of a :func:`crowded` overlay's markers."""
    return float(np.clip(CROWDED_OPACITY * np.sqrt(8 / _crowding(count, height)), LEAST_OPACITY, CROWDED_OPACITY))


def overlay_marker_size(largest: float, count: int, *, height: int = FULL_HEIGHT, smallest: float = MIN_MARKER) -> float:
    """Marker size of an overlay of ``count`` points on a map ``height`` pixels high:
    ``largest`` for a few dozen (50 cores) on a full-size map, shrinking as 1 / sqrt(count)
    so thousands of picks (a whole-budget baseline's 2,500 cores) stay points on the pool
    instead of one blob, and with the map's height; never below ``smallest``."""
    scale = min(1.0, height / FULL_HEIGHT) * min(1.0, np.sqrt(FULL_SIZE_POINTS / max(count, 1)))
    return float(max(smallest, largest * scale))


@dataclass(frozen=True)
class Marker:
    """How every map draws one role (the Select, Inspect and Compare maps, the Learn
    page's figures): a plotly symbol, its size (``largest`` for a few dozen points, shrinking
    with their number and the map's height down to ``smallest``) and colour. ``line``: the
    outline's width, None for 1.5 px from 8 px up and 1 px below (filled symbols); a
    line-drawn symbol ('x-thin') is its line only, so it sets its own. In a :func:`crowded`
    overlay every role is semi-transparent (:func:`crowded_opacity`: the removed crosses
    too, thousands of which were a grey mass over a Compare panel), and a filled symbol is
    drawn as its outline ('star' -> 'star-open'), 1 px: the same shape and colour, the pool
    seen through."""

    symbol: str
    largest: float
    colour: str
    smallest: float = MIN_MARKER
    line: float | None = None

    def style(self, count: int = 1, *, height: int = FULL_HEIGHT) -> dict:
        """The plotly ``marker`` of ``count`` such points on a map ``height`` pixels high."""
        size = overlay_marker_size(self.largest, count, height=height, smallest=self.smallest)
        width = self.line if self.line is not None else 1.5 if size >= 8 else 1
        if crowded(count, height=height):  # a line-drawn symbol keeps its shape and line
            symbol = self.symbol if self.symbol.endswith(("-open", "-thin")) else f"{self.symbol}-open"
            return dict(symbol=symbol, size=size, color=self.colour, opacity=crowded_opacity(count, height=height),
                        line=dict(width=width if self.line is not None else 1, color=self.colour))
        return dict(symbol=self.symbol, size=size, color=self.colour, line=dict(width=width, color=self.colour))


#: role -> its marker, drawn bottom to top. The removed noise is a line-drawn cross of at
#: least 6 px with a 1.5 px line: a filled 'x' shrunk to 4-5 px read as a grey dot (seen in
#: Chromium), where the legend says crosses.
MARKERS = {
    "removed": Marker("x-thin", 7, "rgba(95, 99, 104, 0.55)", smallest=6, line=1.5),  # light: a large share of the pool
    "selected": Marker("star", 14, "#111111"),  # a whole-budget method's picks (TypiClust, ProbCover), drawn as cores are
    "boundary": Marker("circle-open", 10, "#d62728"),
    "core": Marker("star", 14, "#111111"),
    # Manual marks (Inspect's "Apply marks"), not roles: a ring around the sample, drawn
    # on top of every role's marker, so a marked core or boundary pick shows both.
    "excluded": Marker("circle-x-open", 18, "#ff7f0e", smallest=12, line=2),  # crossed out of the export
    "forced": Marker("circle-cross-open", 18, "#2ca02c", smallest=12, line=2),  # added to the export
}
#: A sample's manual mark, as the maps, their filters and the galleries name it; the first
#: two are drawn (:data:`MARKERS`), "unmarked" is the rest of the pool.
MARKS = ("excluded", "forced", "unmarked")
#: What each drawn mark means, in its legend entry and hover.
MARK_MEANING = {"excluded": "excluded from the export", "forced": "forced into the export"}
#: A mark that changes nothing in the map's selection (an excluded sample it did not pick, a
#: forced one it picked): its ring is drawn faint, named so (:func:`mark_applies`).
MARK_IDLE = {"excluded": "excluded mark, not picked here", "forced": "forced mark, picked here anyway"}
#: The opacity of such a faint ring.
IDLE_MARK_OPACITY = 0.4


def mark_applies(selection: Selection, mark: str) -> np.ndarray:
    """(N,) bool: where a ``mark`` ("excluded", "forced") would change ``selection``'s
    export: an excluded sample it picked, a forced sample it did not."""
    picked = np.zeros(selection.role.size, dtype=bool)
    picked[selection.indices] = True
    return picked if mark == "excluded" else ~picked


def layer_role(selection: Selection, role: str) -> str:
    """The role as a map names its layer (legend entry, hover): every whole-budget method's
    picks are "selected" (TypiClust and ProbCover mark theirs so; kmeans, activeft, fds and
    random, stage-1 methods spending the whole budget, mark theirs "core" in
    :attr:`Selection.role`, but they are no cores beside other picks)."""
    return "selected" if role == "core" and selection.params.get("method") != "bilaf" else role


def draws_density(n: int) -> bool:
    """Whether a pool of ``n`` samples is drawn as a density image (else as markers)."""
    return n > DENSITY_ABOVE


@dataclass(frozen=True)
class Colouring:
    """What colours the pool: ``codes`` (N,) a category per row (-1: outside the
    filters, drawn grey), ``names`` the categories' names, ``title`` what they are, in the
    words of the page's "Colour pool by" control ("pseudo-class", "true label")."""

    codes: np.ndarray
    names: tuple[str, ...]
    title: str
    #: per category, its colour's index in ``palette`` (default: category mod palette size)
    colour_of: np.ndarray | None = None

    @property
    def palette(self) -> tuple[str, ...]:
        return PALETTE_10 if len(self.names) <= len(PALETTE_10) else PALETTE_MANY

    def colours(self) -> np.ndarray:
        """Per category, its colour's index in ``palette``."""
        return self.colour_of if self.colour_of is not None else np.arange(len(self.names)) % len(self.palette)

    def colour_index(self) -> np.ndarray:
        """Per row, its colour's index in ``palette + (OTHER,)``."""
        return np.where(self.codes >= 0, self.colours()[np.maximum(self.codes, 0)], len(self.palette))


def spread_colours(centres: np.ndarray, n_colours: int) -> np.ndarray:
    """A colour index (0 .. n_colours - 1) per category whose centre on the map is
    ``centres[i]``, so categories that share a colour lie far apart: each in turn takes the
    colour whose nearest earlier user is farthest (unused colours first)."""
    chosen = np.zeros(len(centres), dtype=np.int64)
    nearest = np.full(n_colours, np.inf)  # per colour: distance from the current centre to its users
    for i, centre in enumerate(centres):
        nearest[:] = np.inf
        if i:
            distance = np.linalg.norm(centres[:i] - centre, axis=1)
            np.minimum.at(nearest, chosen[:i], distance)
        chosen[i] = int(np.argmax(nearest))  # the first unused colour, else the farthest one
    return chosen


def in_focus(selection: Selection, *, roles=ROLES, cluster: int | None = None, marks: np.ndarray | None = None,
             mark_kinds=MARKS) -> np.ndarray:
    """(N,) bool: the pool rows Inspect's filters keep: role in ``roles``, pseudo-class
    ``cluster`` (None: any) and manual mark in ``mark_kinds`` (``marks``: each row's mark of
    :data:`MARKS`, as :func:`studio.session.row_marks` gives it; None: no mark filter)."""
    focus = np.isin(selection.role, list(roles))
    if cluster is not None:
        focus &= selection.cluster == cluster
    if marks is not None:
        focus &= np.isin(marks, list(mark_kinds))
    return focus


def pool_colouring(selection: Selection, labels=None, color_by: str = "pseudo-class", *, coords=None,
                   roles=ROLES, cluster: int | None = None, marks: np.ndarray | None = None, mark_kinds=MARKS,
                   pick_cells: bool = True) -> Colouring:
    """The pool's categories: true labels (when asked and the pool has them; class names
    keep their names) or pseudo-classes (the core each sample is assigned to; one
    category "pool" for a method without clusters, and with ``pick_cells=False`` for a
    whole-budget method, whose pseudo-classes are the cells of its picks: one per pick,
    unreadable on a small map). Rows outside ``roles`` / ``cluster`` / ``mark_kinds``
    (Inspect's filters, :func:`in_focus`) get -1. With the map's ``coords``, categories beyond the palette
    share colours only far apart (:func:`spread_colours` of their mean positions)."""
    n = selection.role.size
    if color_by == "true label" and labels is not None:
        names, codes = np.unique(np.asarray(labels), return_inverse=True)
        colouring = (codes.astype(np.int64), tuple(str(v) for v in names), "true label")
    elif (selection.cluster >= 0).any() and (pick_cells or selection.params.get("method") == "bilaf"):
        k = int(selection.cluster.max()) + 1
        colouring = (selection.cluster.astype(np.int64), tuple(str(c) for c in range(k)), "pseudo-class")
    else:  # titled with the colouring asked for (the page's control), and why it is one colour
        method = selection.params.get("method", "this method")
        why = ("gives no pseudo-class per sample" if not (selection.cluster >= 0).any()  # TypiClust clusters, but
               else "has one per pick, not drawn here")
        colouring = (np.zeros(n, dtype=np.int64), ("pool",), f"pseudo-class ({method} {why}: the pool is one colour)")
    codes, names, title = colouring
    focus = in_focus(selection, roles=roles, cluster=cluster, marks=marks, mark_kinds=mark_kinds)
    colour_of = None
    if coords is not None and len(names) > len(PALETTE_10):
        count = np.maximum(np.bincount(codes, minlength=len(names)), 1)[:, None]
        centres = np.column_stack([np.bincount(codes, weights=coords[:, i], minlength=len(names)) for i in (0, 1)])
        colour_of = spread_colours(centres / count, len(PALETTE_MANY))
    if not focus.all():
        codes = np.where(focus, codes, -1)
    return Colouring(codes, names, title, colour_of)


def map_extent(coords: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1): the pool's bounding box with a 2 % margin (never empty)."""
    low, high = coords.min(axis=0).astype(np.float64), coords.max(axis=0).astype(np.float64)
    pad = np.maximum((high - low) * 0.02, 1e-6)
    return float(low[0] - pad[0]), float(high[0] + pad[0]), float(low[1] - pad[1]), float(high[1] + pad[1])


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def density_rgba(coords: np.ndarray, colouring: Colouring, *, extent=None, shape=DENSITY_SHAPE) -> np.ndarray:
    """(rows, columns, 4) uint8 image of the pool over ``extent`` (row 0 at the top): each
    pixel the colour with the most samples in it (grey for samples outside the filters),
    its opacity 0.25-0.9 growing with the log of the pixel's count; empty pixels
    transparent. A sparse pool (under SPARSE samples per filled pixel, as 50,000 samples
    are) is first counted over each pixel's 3 x 3 neighbourhood, so it reads as areas
    rather than speckles."""
    x0, x1, y0, y1 = extent or map_extent(coords)
    height, width = shape
    col = np.clip(((coords[:, 0] - x0) / (x1 - x0) * width).astype(np.int64), 0, width - 1)
    row = np.clip(((y1 - coords[:, 1]) / (y1 - y0) * height).astype(np.int64), 0, height - 1)
    colours = colouring.palette + (OTHER,)  # at most 25: one count grid per colour is small
    counts = np.bincount((row * width + col) * len(colours) + colouring.colour_index(),
                         minlength=height * width * len(colours)).reshape(height, width, len(colours))
    if coords.shape[0] < SPARSE * np.count_nonzero(counts.any(axis=2)):
        padded = np.pad(counts, ((1, 1), (1, 1), (0, 0)))
        counts = sum(padded[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3))
    total = counts.sum(axis=2)
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[..., :3] = np.array([_hex_rgb(c) for c in colours], dtype=np.uint8)[counts.argmax(axis=2)]
    filled = total > 0
    level = np.log1p(total[filled]) / np.log1p(max(int(total.max()), 1))
    rgba[filled, 3] = np.round(255 * (0.25 + 0.65 * level)).astype(np.uint8)
    return rgba


_PNG_LOCK = threading.Lock()
_PNGS: OrderedDict = OrderedDict()  # key -> (coords kept alive so its id is not reused, data URI)


def density_png(coords: np.ndarray, colouring: Colouring, extent) -> str:
    """:func:`density_rgba` as a PNG data URI, remembered for the last 16 (map, colouring)
    pairs: a slider change that moves only the overlays re-encodes nothing."""
    key = (id(coords), coords.shape, extent, colouring.title, colouring.colours().tobytes(),
           hashlib.blake2b(np.ascontiguousarray(colouring.codes).view(np.uint8), digest_size=16).digest())
    with _PNG_LOCK:
        if key in _PNGS:
            _PNGS.move_to_end(key)
            return _PNGS[key][1]
    buffer = io.BytesIO()
    Image.fromarray(density_rgba(coords, colouring, extent=extent), "RGBA").save(buffer, format="PNG", optimize=True)
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    with _PNG_LOCK:
        _PNGS[key] = (coords, uri)
        while len(_PNGS) > 16:
            _PNGS.popitem(last=False)
    return uri


#: The colour legend lists at most this many categories by name.
LEGEND_ITEMS = 24


def legend_html(colouring: Colouring) -> str:
    """The pool's colour legend as a line of HTML (under the map, where plotly's toolbar
    cannot cover it): a swatch per category; past the palette's size the colours repeat,
    and each swatch names every category that uses it (up to three, then "...")."""
    palette = colouring.palette
    names = np.asarray(colouring.names)
    colour_of = colouring.colours()
    items = []
    for index, colour in enumerate(palette[:min(len(names), LEGEND_ITEMS)]):
        sharing = names[colour_of == index]
        text = ", ".join(sharing[:3]) + (", ..." if len(sharing) > 3 else "")
        items.append(f'<span class="bilaf-key"><span class="bilaf-swatch" style="background:{colour}"></span>'
                     f'{html.escape(text)}</span>')
    if (colouring.codes < 0).any():
        items.append(f'<span class="bilaf-key"><span class="bilaf-swatch" style="background:{OTHER}"></span>'
                     "outside the filters</span>")
    repeat = (f" ({len(names)}; {len(palette)} colours, each shared by clusters far apart)" if len(names) > len(palette)
              else "")
    return ("<style>.bilaf-legend{font-size:0.8rem;color:#444;line-height:1.7}"
            ".bilaf-key{margin-right:12px;white-space:nowrap}.bilaf-swatch{display:inline-block;width:11px;"
            "height:11px;border-radius:2px;margin-right:4px;vertical-align:-1px}</style>"
            f'<div class="bilaf-legend"><b>Pool colour: {html.escape(colouring.title)}</b>{repeat} &nbsp; '
            + "".join(items) + "</div>")


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


def _hovertemplate(role: str, has_labels: bool, id_format: str | None, *, named: bool = False) -> str:
    """Hover of a layer, filled by plotly from ``customdata`` columns (row, cluster,
    label[, boundary score, opponent]): no per-point strings to build or send, but for
    labels that are class names (``named``: each point's name is its ``hovertext``)."""
    sample = "%{text}" if id_format is None else id_format.replace("customdata", "customdata[0]")
    label = "%{hovertext}" if named else "%{customdata[2]}"
    text = sample + (f"<br>label {label}" if has_labels else "") + f"<br>role {role} · cluster %{{customdata[1]}}"
    if role == "boundary":
        text += "<br>boundary score %{customdata[3]:.3f} · opponent cluster %{customdata[4]}"
    return text + "<extra></extra>"


def _discrete_scale(colours) -> list:
    """A plotly colour scale giving colour i to the value i (0 .. len - 1)."""
    steps = len(colours)
    if steps == 1:
        return [[0.0, colours[0]], [1.0, colours[0]]]
    scale = []
    for i, colour in enumerate(colours):
        scale += [[i / steps, colour], [(i + 1) / steps, colour]]
    return scale


def selection_figure(coords: np.ndarray, selection: Selection, *, ids, labels=None,
                     color_by: str = "pseudo-class", height: int = FULL_HEIGHT, columns: int = 1,
                     show_legend: bool = True,
                     roles=ROLES, cluster: int | None = None, marks: np.ndarray | None = None, mark_kinds=MARKS,
                     colouring: Colouring | None = None) -> go.Figure:
    """The pool (coloured by pseudo-class or true label; :func:`pool_colouring`), then
    the removed noise (crosses), boundary picks (circles) and cores (stars) on top, and
    with ``marks`` (each row's manual mark, :data:`MARKS`) a ring around every sample
    marked excluded or forced, one legend entry per kind, its hover naming the mark; a
    mark that changes nothing in this selection (:func:`mark_applies`) is a faint ring,
    named so (:data:`MARK_IDLE`). A whole-budget method's picks are "selected"
    (:func:`layer_role`). An overlay beyond :func:`drawn_at_most` of the map (``height``
    pixels high, one of ``columns`` side by side) draws a fixed subset, named so.

    Up to :data:`DENSITY_ABOVE` samples the pool is a marker layer; above, a density
    image under the overlays (:func:`density_png`; pick its samples with
    :func:`rows_in_region`). ``roles``, ``cluster`` and ``mark_kinds`` (Inspect's
    filters, :func:`in_focus`) keep only the matching overlays and grey the rest of the pool. Every marker carries its feature-set
    row first in ``customdata``, so a lasso or box selection maps back to samples
    (:func:`picked_rows`). The colour legend is :func:`legend_html` of the same
    ``colouring`` (made here when not given), drawn by the page.
    """
    n = coords.shape[0]
    colouring = colouring or pool_colouring(selection, labels, color_by, roles=roles, cluster=cluster, marks=marks,
                                            mark_kinds=mark_kinds)
    focus = in_focus(selection, roles=roles, cluster=cluster, marks=marks, mark_kinds=mark_kinds)
    named = None  # labels that are class names: shown as names in the hover
    if labels is not None:
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.number):
            named = labels.astype(str)
            labels = np.unique(labels, return_inverse=True)[1]

    def label_text(rows: np.ndarray):
        return None if named is None else named[rows]
    fig = go.Figure()
    # Row numbers as customdata and ids as text (or printed from the rows), no per-point
    # hover strings: every layer is re-sent on every rerun, so it is kept lean.
    id_format = row_id_format(ids)

    def id_text(rows: np.ndarray):
        return None if id_format is not None else np.asarray(ids)[rows]

    label_column = np.full(n, -1.0) if labels is None else np.asarray(labels, dtype=np.float64)
    axes = dict(showticklabels=False, title=None, showgrid=False, zeroline=False)
    x_axis, y_axis = dict(axes), dict(axes)
    if draws_density(n):
        extent = map_extent(coords)
        fig.add_layout_image(source=density_png(coords, colouring, extent), xref="x", yref="y", x=extent[0],
                             y=extent[3], sizex=extent[1] - extent[0], sizey=extent[3] - extent[2],
                             sizing="stretch", layer="below", xanchor="left", yanchor="top")
        x_axis.update(range=list(extent[:2]), autorange=False)
        y_axis.update(range=list(extent[2:]), autorange=False)
    else:
        colours = colouring.palette + (OTHER,)
        rows = np.arange(n)
        fig.add_trace(go.Scattergl(
            x=coords[:, 0], y=coords[:, 1], mode="markers", name=f"pool ({n:,})",
            marker=dict(size=4, color=colouring.colour_index(), colorscale=_discrete_scale(colours), cmin=-0.5,
                        cmax=len(colours) - 0.5, opacity=0.35, showscale=False),
            customdata=np.column_stack((rows, selection.cluster, label_column)).astype(np.float32),
            text=id_text(rows), hovertext=label_text(rows),
            hovertemplate=_hovertemplate("pool", labels is not None, id_format, named=named is not None)))
    score, opponent = np.full(n, np.nan), np.full(n, -1.0)
    score[selection.indices], opponent[selection.indices] = selection.boundary_score, selection.opponent
    for role, marker in MARKERS.items():
        if role in MARK_MEANING:
            continue  # the marks' rings go on top, below
        idx = np.flatnonzero((selection.role == role) & focus)
        if idx.size == 0:
            continue
        count, most = idx.size, drawn_at_most(height, columns)
        # as the legend writes every count; beyond `most`, the markers are one blob (5,000 crosses
        # cost a second a rerun): a fixed subset shows where they lie, styled as the points drawn
        name = f"{layer_role(selection, role)} ({count:,}" + (f"; {most:,} drawn)" if count > most else ")")
        if count > most:
            idx = np.sort(np.random.default_rng(0).choice(idx, most, replace=False))
        fig.add_trace(go.Scattergl(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=name,
            marker=marker.style(idx.size, height=height),
            customdata=np.column_stack((idx, selection.cluster[idx], label_column[idx])
                                       + ((score[idx], opponent[idx]) if role == "boundary" else ())).astype(np.float32),
            text=id_text(idx), hovertext=label_text(idx),
            hovertemplate=_hovertemplate(layer_role(selection, role), labels is not None, id_format,
                                         named=named is not None)))
    for mark, applies, meaning in [(m, a, (MARK_MEANING if a else MARK_IDLE)[m]) for a in (False, True)
                                   for m in MARK_MEANING]:
        # the marks that change this selection's export on top, the others faint under them
        idx = np.flatnonzero((marks == mark) & focus & (mark_applies(selection, mark) == applies)) \
            if marks is not None else np.empty(0, dtype=np.int64)
        if idx.size == 0:
            continue
        # few points: a whole hover line each (id, label, role, cluster and the mark)
        hover = [html.escape(str(np.asarray(ids)[i])) + ("" if labels is None else "<br>label " + (
            f"{label_column[i]:g}" if named is None else html.escape(named[i])))
                 + f"<br>role {layer_role(selection, selection.role[i])} · cluster {selection.cluster[i]}"
                 f"<br>mark: {meaning}" for i in idx]
        style = MARKERS[mark].style(idx.size, height=height)
        fig.add_trace(go.Scattergl(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=f"{meaning} ({idx.size:,})",
            marker=style if applies else {**style, "opacity": IDLE_MARK_OPACITY},
            customdata=np.column_stack((idx, selection.cluster[idx], label_column[idx])).astype(np.float32),
            text=hover, hovertemplate="%{text}<extra></extra>"))
    # The legend goes under the map: above it, plotly's toolbar would cover it.
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=TOOLBAR, b=0), showlegend=show_legend,
                      legend=dict(orientation="h", y=-0.02, yanchor="top", x=0), dragmode="lasso",
                      xaxis=x_axis, yaxis=y_axis, plot_bgcolor="white")
    return fig


#: The pool samples of a map pick on a density map (no markers of their own to select).
PICK_COLOUR = "#212121"


def draw_pick(fig: go.Figure, rows: np.ndarray, coords: np.ndarray, *, focus: np.ndarray | None = None) -> None:
    """Draw the map pick ``rows`` (feature-set rows, ascending) on a
    :func:`selection_figure` as plotly draws a lasso's selection: in every marker layer the
    picked points in full colour, the rest faded (each trace's ``selectedpoints``). On a
    density map (:func:`draws_density`) the pool's picked samples have no marker: a light
    veil of them goes on the image, under the overlays (the pool's colours and the picks
    show through it), only those in ``focus`` (a mask over the pool: Inspect's filters).
    Nothing changes for an empty pick."""
    if rows.size == 0:
        return
    if draws_density(coords.shape[0]):
        shown = rows if focus is None else rows[focus[rows]]
        fig.add_trace(go.Scattergl(
            x=coords[shown, 0], y=coords[shown, 1], mode="markers", name=f"map pick ({shown.size:,})",
            marker=dict(size=3, color=PICK_COLOUR, opacity=0.4), customdata=shown[:, None].astype(np.float32),
            hoverinfo="skip"))
        fig.data = (fig.data[-1],) + fig.data[:-1]  # under the overlays
    for trace in fig.data:
        shown = np.asarray(trace.customdata)[:, 0].astype(np.int64)
        trace.selectedpoints = np.flatnonzero(np.isin(shown, rows))


def overlay_line(fig: go.Figure) -> str:
    """The overlay layers of a :func:`selection_figure` as its legend names them, for a map
    drawn without its legend (Compare's): "core (50) · boundary (2,450; 714 drawn) ..."."""
    return " · ".join(trace.name for trace in reversed(fig.data) if not trace.name.startswith("pool ("))


#: A top-1 axis: percent on its whole scale (an automatic range cut its ticks below a 91.6 %
#: point); the run history's accuracy-against-budget chart and a run's per-epoch top-1.
TOP1_AXIS = dict(tickformat=".0%", range=[0, 1.02])
#: What each per-epoch curve of a finetuning run (FinetuneResult.history) draws:
#: history key -> (title, y axis title).
EPOCH_CURVES = {"loss": ("Training loss per epoch", "loss"),
                "top1": ("Top-1 per epoch", "top-1")}


def epoch_figure(history: list[dict], key: str, *, height: int = 260) -> go.Figure:
    """One per-epoch curve of a finetuning run (``key`` of :data:`EPOCH_CURVES`), titled,
    its axes named; top-1 in percent, as the rest of the Finetune page. Epochs without a
    value (top-1 between evaluations) are left out."""
    title, y_title = EPOCH_CURVES[key]
    rows = [h for h in history if h.get(key) is not None]
    epochs, values = [int(h["epoch"]) for h in rows], [float(h[key]) for h in rows]
    top1 = key == "top1"
    fig = go.Figure(go.Scatter(x=epochs, y=values, mode="lines+markers", name=title,
                               hovertemplate="epoch %{x}: " + ("%{y:.1%}" if top1 else "%{y:.3f}") + "<extra></extra>"))
    fig.update_layout(title=dict(text=title), height=height, margin=dict(l=10, r=10, t=40, b=10), showlegend=False)
    fig.update_xaxes(title=dict(text="epoch"), tickmode="array", tickvals=epochs, tickformat=",d")
    fig.update_yaxes(title=dict(text=y_title), **(TOP1_AXIS if top1 else dict(rangemode="tozero")))
    return fig


def _inside_polygon(x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Even-odd rule for points (x, y) and the polygon (px, py), one edge at a time."""
    inside = np.zeros(x.size, dtype=bool)
    xj, yj = px[-1], py[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        for xi, yi in zip(px, py):
            crosses = (yi > y) != (yj > y)
            inside ^= crosses & (x < (xj - xi) * (y - yi) / (yj - yi) + xi)
            xj, yj = xi, yi
    return inside


def rows_in_region(coords: np.ndarray, selection_state) -> np.ndarray:
    """Pool rows inside the boxes and lassos of a plotly selection (Streamlit's
    ``event.selection``: ``box`` [{x: [x0, x1], y: [y0, y1]}], ``lasso`` [{x: [...],
    y: [...]}], in data coordinates), ascending: the pool samples under a density image,
    which has no markers to report."""
    hit = np.zeros(coords.shape[0], dtype=bool)
    x, y = coords[:, 0], coords[:, 1]
    for box in selection_state.get("box", []) or []:
        if len(box.get("x", [])) == 2 and len(box.get("y", [])) == 2:
            (x0, x1), (y0, y1) = sorted(box["x"]), sorted(box["y"])
            hit |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    for lasso in selection_state.get("lasso", []) or []:
        px, py = np.asarray(lasso.get("x", []), dtype=np.float64), np.asarray(lasso.get("y", []), dtype=np.float64)
        if px.size < 3 or px.size != py.size:
            continue
        near = np.flatnonzero((x >= px.min()) & (x <= px.max()) & (y >= py.min()) & (y <= py.max()))
        hit[near[_inside_polygon(x[near], y[near], px, py)]] = True
    return np.flatnonzero(hit)


def picked_rows(points: list[dict]) -> np.ndarray:
    """Feature-set rows of the points a plotly selection event reports, ascending.

    A point's ``customdata`` is a row of columns whose first is the row (a bare row is
    read too). Plotly sends numeric arrays as typed arrays, and a typed array reaches
    Python as a dict of its positions (``{"0": row, "1": cluster, ...}``).
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


@dataclass(frozen=True)
class ProgressFile:
    """A progress callback (fraction, message) for a map computed in another process (the
    app's background UMAP / t-SNE job): each call replaces a small JSON file, which the
    page reads (:meth:`read`) to show a bar with the time left. Picklable."""

    path: str

    @classmethod
    def for_job(cls, key) -> "ProgressFile":
        """The file of the job ``key`` (any value with a stable repr: source, method, seed)."""
        name = hashlib.sha256(repr(key).encode()).hexdigest()[:20]
        return cls(os.path.join(tempfile.gettempdir(), "bilaf-progress", f"{name}.json"))

    def reset(self) -> "ProgressFile":
        """Forget an earlier job's progress (a new job starts); returns self."""
        with contextlib.suppress(OSError, ValueError):
            os.remove(self.path)
        return self

    def __call__(self, fraction: float, message: str) -> None:
        now = time.time()
        started = (self.read() or {}).get("started", now)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w") as handle:
            json.dump({"fraction": float(fraction), "message": message, "started": started, "at": now}, handle)
        os.replace(temporary, self.path)

    def read(self) -> dict | None:
        """{fraction, message, started, at} of the last call, or None before the first."""
        with contextlib.suppress(OSError, ValueError):
            with open(self.path) as handle:
                return json.load(handle)
        return None


def progress_line(what: str, done: dict, now: float) -> tuple[float, str]:
    """The bar's (fraction, text) for a :meth:`ProgressFile.read` record at time ``now``:
    the step, the time left and the seconds since the work started (counted to ``now``, not
    to the last report: a long step that reports nothing still shows the time passing)."""
    elapsed = max(0.0, now - done["started"])
    fraction = min(1.0, max(0.0, float(done["fraction"])))
    return fraction, f"{what}: {done['message']}{time_left(fraction, elapsed)} ({elapsed:.0f} s so far)"


def time_left(fraction: float, elapsed: float) -> str:
    """" · about N s left" (or min) once the work is far enough along to tell; else ""."""
    if not 0.05 < fraction < 1 or elapsed < 2:
        return ""
    left = elapsed / fraction - elapsed
    return f" · about {left:.0f} s left" if left < 120 else f" · about {left / 60:.0f} min left"
