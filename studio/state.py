"""The app's computations: the active data source, and cached access to its pool,
features, thumbnails, cores, selections and 2-D maps. All computation is in bilaf_core;
what a user made (values, marks, picks) is in :mod:`studio.session`.

Caching: ``st.cache_resource`` for objects shared read-only across sessions (pools,
thumbnails, stage-2 geometries, background projection jobs); feature sets, stage-1 cores
and selections in shared least-recently-used memos keyed on cheap values (source and
parameter tuples), so a stage-2 slider change reuses the cached stage-1 cores and a
long computation can report progress (and be stopped) while it runs.
"""

from __future__ import annotations

import ctypes
import functools
import math
import multiprocessing
import os
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from bilaf_core import diagnostics, select, stage2_geometry
from bilaf_core.guidance import Guidance, guidance
from bilaf_core.distances import nearest_rows
from bilaf_core.metrics import pseudo_classes
from bilaf_core.metrics import selection_diagnostics as selection_diagnostics_of
from bilaf_core.selection import resolve_n_cores, resolve_normalize, runs_stage2
from bilaf_core._validation import MAX_SEED
from bilaf_core.auto import AUTO
from bilaf_core.core import cores_cache_path, l2_normalize, preload, select_cores
from bilaf_core.data import extract_image_zip, load_pool
from bilaf_core.features import (FEATURE_FILE_TYPES, NPZ_FEATURE_KEYS, FeatureSet, default_cache_dir, duplicate_rows,
                                 extract_features, load_backbone, load_feature_file, thumbnails)
from bilaf_core.metrics import default_coverage_radius
from bilaf_core.params import (BILAF_ONLY_PARAMS, DEFAULT_BUDGET_PERCENT, STAGE2_PARAMS, SelectionParams,
                               budget_from_percent, default_budget, param_specs)
from bilaf_core.projection import cached_projection, project_2d
from bilaf_core.store import RunStore, StoreError, default_store_path

from .maps import MAP_NAMES, ProgressFile

#: Pools above this size start work of a minute or more only when asked (a button): a UMAP /
#: t-SNE map, Compare's settings not in the cache (opening Compare on CIFAR-10 started two
#: minutes of selections).
ON_REQUEST_ABOVE = 20_000
#: Interactive diagnostics average over at most this many pool samples (a fixed seeded
#: subset, so selections are compared on the same samples; standard error of the EMD
#: proxy about 1 % of its value). Each rerun costs DIAGNOSTICS_SAMPLE x B distances.
DIAGNOSTICS_SAMPLE = 5_000
BACKBONE_CHOICES = {
    "DINO ViT-S/16 (paper)": "vit_small_patch16_224.dino",
    "EfficientNet-Lite0 (bundled ImageNet weights, offline)": "tf_efficientnet_lite0",
    "Pixels (tiny demos)": "pixels",
    "Other timm model": "",
}
#: The backbones the Data page names (suggested first for a misspelt one: a link's, Finetune's).
OFFERED_BACKBONES = tuple(filter(None, BACKBONE_CHOICES.values()))


@dataclass(frozen=True)
class Source:
    """What the user chose on the Data page; hashable, so it keys the caches."""

    dataset: str = "digits"
    root: str = ""
    backbone: str = "pixels"
    weights: str = ""
    feature_file: str = ""
    test_root: str = ""  # image folders: an optional labelled test folder
    upload: str = ""  # the user's name of an uploaded file (the app keeps it under its cache)

    @property
    def label(self) -> str:
        if self.upload:
            return f"upload {self.upload}"
        if self.feature_file:
            return f"feature file {Path(self.feature_file).name}"
        return f"{self.dataset}{f' ({self.root})' if self.root else ''}"

    @property
    def file_stem(self) -> str:
        """The source in an exported file's name: the file's or folder's own name, else the
        data set's ("features_bilaf_2500.csv" did not say which feature file)."""
        named = self.upload or self.feature_file or (self.root if self.dataset == "folder" else "")
        return Path(named).stem if named else self.dataset


def current_source() -> Source:
    """The session's source; a new session starts on BILAF_START_FEATURES (a feature
    file) when that is set, else on the built-in digits."""
    if "source" not in st.session_state:
        start = os.environ.get("BILAF_START_FEATURES", "")
        st.session_state.source = Source(dataset="features", feature_file=start, backbone="") if start else Source()
    return st.session_state.source


def upload_dir() -> Path:
    """Where the Data page keeps its uploads (one folder per content) inside the cache."""
    return default_cache_dir() / "uploads"


def allowed_roots() -> list[Path]:
    """Folders the app may read from: home, the data directory, the working directory,
    the app's own uploads (wherever BILAF_CACHE_DIR puts them), the project's sibling
    shared/ folder, plus BILAF_ALLOWED_ROOTS (os.pathsep-separated); each once, in that order
    (a folder given twice was named twice in :func:`check_allowed`'s message)."""
    roots = [Path.home(), Path(os.environ.get("BILAF_DATA_DIR", Path.home() / ".cache" / "bilaf-studio")), Path.cwd(),
             upload_dir()]
    shared = Path(__file__).resolve().parents[2] / "shared"
    if shared.is_dir():
        roots.append(shared)
    roots += [Path(p) for p in os.environ.get("BILAF_ALLOWED_ROOTS", "").split(os.pathsep) if p]
    return list(dict.fromkeys(r.resolve() for r in roots))


def check_allowed(path: str) -> str:
    """Resolve a user-typed folder; refuse it outside the allowed roots."""
    resolved = Path(path).expanduser().resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in allowed_roots()):
        raise ValueError(f"{resolved} is outside the folders this app may read ({', '.join(map(str, allowed_roots()))}); "
                         "to allow it, add it to BILAF_ALLOWED_ROOTS (folders separated by ':') and restart the app")
    return str(resolved)


@st.cache_resource(show_spinner="Loading the image pool ...", max_entries=4)
def pool(dataset: str, root: str, test_root: str = ""):
    return load_pool(dataset, root=root or None, test_root=test_root or None)


def feature_set(source: Source, *, progress=None, notify=None, engine: str = "local",
                ray_address: str | None = None) -> FeatureSet:
    """The source's features; extracted (with progress) or served from the caches. The
    engine (``local`` or ``ray``, see :func:`bilaf_core.features.extract_features`) does
    not key the caches: both give the same rows."""
    def load() -> FeatureSet:
        if source.feature_file:
            return load_feature_file(source.feature_file)
        backbone = load_backbone(source.backbone, weights=source.weights or None, allow_fallback=True,
                                 notify=notify or (lambda message: None))
        return extract_features(pool(source.dataset, source.root, source.test_root), backbone, progress=progress,
                                engine=engine, ray_address=ray_address)

    return _remembered("features", source, load, max_entries=8)


@st.cache_resource
def _memos() -> tuple[threading.Lock, dict[str, OrderedDict]]:
    # Plain dicts rather than @st.cache_data: Streamlit forbids a cached function to update
    # elements made outside it, such as the progress bars that also let a rerun or a
    # closed tab interrupt the work (each update is a point where Streamlit can stop it).
    return threading.Lock(), {}


def _remembered(table: str, key, compute, *, max_entries: int):
    """``compute()`` once per key, shared read-only by all sessions; least recently used
    entries beyond ``max_entries`` are dropped. An interrupted computation stores nothing."""
    lock, tables = _memos()
    with lock:
        cache = tables.setdefault(table, OrderedDict())
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = compute()
    with lock:
        cache[key] = value
        while len(cache) > max_entries:
            cache.popitem(last=False)
    return value


def loaded_feature_set(source: Source) -> FeatureSet | None:
    """The source's features if a page has loaded them, else None (never loads)."""
    lock, tables = _memos()
    with lock:
        return tables.get("features", {}).get(source)


def current_feature_set() -> tuple[Source, FeatureSet]:
    """The session's source and features; on failure an error on the page, which stops."""
    source = current_source()
    try:
        return source, feature_set(source)
    except ValueError as exc:
        st.error(f"The data source {source.label} cannot be loaded: {exc}. Choose another one on the Data page.")
        st.stop()


def duplicate_count(source: Source) -> int:
    """How many of the source's feature rows repeat an earlier row exactly
    (:func:`bilaf_core.features.duplicate_rows`), once per source."""
    return _remembered("duplicates", source, lambda: int(duplicate_rows(feature_set(source).features).sum()),
                       max_entries=8)


@st.cache_resource(max_entries=4)
def features(source: Source) -> np.ndarray:
    """The source's features as float32, converted once (a float16 file of 50,000 x 1,280
    took 1 s per conversion, and the first load made five); shared read-only."""
    return _frozen(np.asarray(feature_set(source).features, dtype=np.float32))


def thumbs(source: Source):
    """(N', s, s, 3) thumbnails aligned with the feature rows, or None (feature files)."""
    if source.feature_file:
        return None
    fs = feature_set(source)
    return _thumbs(source.dataset, source.root)[fs.kept]


#: Nearest neighbours shown beside an enlarged sample.
NEIGHBOURS_SHOWN = 12


def neighbours(source: Source, row: int) -> np.ndarray:
    """The NEIGHBOURS_SHOWN rows nearest to ``row`` in the L2-normalised feature space."""
    return nearest_rows(space(source, True), row, NEIGHBOURS_SHOWN)


def closer(source: Source, result, coords: np.ndarray):
    """The gallery's enlarged view for this source and selection (a row -> None callable)."""
    from .gallery import closer_view

    fs = feature_set(source)
    images = thumbs(source)
    return lambda row: closer_view(row, result, fs, full_image(source, row), coords, neighbours(source, row), images)


def full_image(source: Source, row: int):
    """The image of feature row ``row`` at its own size (None for feature files)."""
    if source.feature_file:
        return None
    return pool(source.dataset, source.root, source.test_root).load_image(int(feature_set(source).kept[row]))


@st.cache_resource(show_spinner="Making thumbnails ...", max_entries=4)
def _thumbs(dataset: str, root: str):
    return thumbnails(pool(dataset, root), size=64)


def cores(source: Source, n_cores: int, core_method: str, seed: int, *, progress=None) -> np.ndarray:
    """Stage 1's cores, once per (features, K, method, seed), also kept on disk beside the
    feature cache, so a restarted app finds them at once."""
    return _remembered("cores", (source, n_cores, core_method, seed),
                       lambda: select_cores(space(source, True), n_cores, method=core_method, random_state=seed,
                                            progress=progress, cache_dir=default_cache_dir()), max_entries=64)


def cores_cached(source: Source, n_cores: int, core_method: str, seed: int) -> bool:
    """Whether :func:`cores` has these cores already, in memory or on disk (it returns them
    at once: the selection's stage 1 takes no time)."""
    lock, tables = _memos()
    with lock:
        if (source, n_cores, core_method, seed) in tables.get("cores", {}):
            return True
    return os.path.isfile(cores_cache_path(default_cache_dir(), space(source, True), n_cores, core_method, seed))


@st.cache_resource(show_spinner="Stage 2: distances within each cluster ...", max_entries=2)
def geometry(source: Source, n_cores: int, core_method: str, seed: int, variant: str):
    """Stage 2's parameter-independent part (assignment, per-cluster distance matrices),
    shared: moving a stage-2 slider then redoes only ranking and picking, and a P_rm or
    delta change only the picking (the geometry keeps IDC's rankings).
    A resource, not data: it holds sum(n_i^2) distances (about 290 MB for 50,000
    samples in 50 clusters), which must not be copied on every cache hit. Made on the
    shared prepared space, which it keeps a reference to (no second normalised copy)."""
    prepared = space(source, resolve_normalize(None, variant))
    return stage2_geometry(prepared, cores(source, n_cores, core_method, seed), variant=variant, normalize=False)


#: The selection parameters the Select and Compare pages set (the seed is the page's own
#: "seed"; L2 normalisation follows the variant).
PAGE_PARAMS = tuple(spec.name for spec in param_specs() if spec.stage != "run")
_SPECS = {spec.name: spec for spec in param_specs()}
#: The selection parameters the Select page sets with a ranged slider (:func:`page_range`).
RANGED_PARAMS = tuple(name for name in PAGE_PARAMS if _SPECS[name].kind in ("int", "float"))


def param_widget(name: str) -> dict:
    """The label, help and range (or options) of a selection parameter's widget, from its
    one definition (:func:`bilaf_core.params.param_specs`)."""
    spec = _SPECS[name]
    # a form cannot grey its BiLAF-only widgets when another method is chosen in it: each says so
    only = " BiLAF only: a whole-budget method (any other) does not use it." if name in BILAF_ONLY_PARAMS else ""
    widget = {"label": spec.label, "help": spec.help + only}
    if spec.kind == "choice":
        widget["options"] = list(spec.choices)
    elif spec.kind in ("int", "float"):
        widget["min_value"], widget["max_value"] = spec.widget_range
        widget["step"] = spec.step
    return widget


def param_default(name: str):
    """A selection parameter's default (:func:`bilaf_core.params.param_specs`)."""
    return _SPECS[name].default


def page_range(name: str, budget: int | None = None, n: int | None = None) -> tuple[float, float]:
    """(low, high): the values the Select page takes for its setting ``name``, the one
    definition every page checks against: a selection parameter's slider range
    (:func:`param_widget`), K's slider (1 .. :func:`n_cores_max` of ``budget`` and ``n``),
    the seed's 0 .. MAX_SEED."""
    if name == "seed":
        return 0, MAX_SEED
    if name == "n_cores":
        return 1, n_cores_max(budget, n)
    widget = param_widget(name)
    return widget["min_value"], widget["max_value"]


def _whole_setting(name: str) -> bool:
    return name in ("seed", "n_cores") or _SPECS[name].kind == "int"


def range_text(name: str, budget: int | None = None, n: int | None = None, *, auto: bool = False) -> str:
    """The Select page's range of ``name`` in words: "a number from 0 to 0.9", "a whole
    number from 0 to 2,147,483,647" (``auto``: K's "'auto' or a whole number from 1 to 89")."""
    low, high = page_range(name, budget, n)
    return (("'auto' or " if auto and name == "n_cores" else "")
            + f"{'a whole number' if _whole_setting(name) else 'a number'} from {_number(low)} to {_number(high)}")


#: :func:`range_problem`'s word for a whole-number setting given a fraction (a seed of 1.5).
NOT_WHOLE = "not a whole number"


def range_problem(name: str, value: float, budget: int | None = None, n: int | None = None) -> str | None:
    """Why the Select page would not take the number ``value`` for ``name``, in the words
    every page uses: "not a whole number" or "outside 0 to 0.9" (:func:`page_range`);
    None when it takes it."""
    low, high = page_range(name, budget, n)
    if not low <= value <= high:
        return f"outside {_number(low)} to {_number(high)}"
    if _whole_setting(name) and not float(value).is_integer():
        return NOT_WHOLE
    return None


def param_column(name: str, budget: int, n: int):
    """A Compare table column for a Select page setting (a selection parameter, or the
    seed): its options, or its help naming the range (:func:`range_text`), from the same
    definition as the Select page's widget."""
    if name == "seed":  # no step=1: its editor dropped a typed "." (1.5 became 15); the page refuses 1.5
        return st.column_config.NumberColumn(help=f"Seed: {range_text('seed')}. Empty: the Select page's seed.")
    widget = param_widget(name)
    if "options" in widget:
        return st.column_config.SelectboxColumn(options=widget["options"], help=widget["help"], required=name == "method")
    if name == "n_cores":
        return st.column_config.TextColumn(help=f"K: {range_text(name, budget, n, auto=True)} (at most the budget "
                                                "B). Empty: the Select page's K.")
    # No min / max: the table reverted a number outside them without a word; the page says
    # which cell it did not apply and why (compare_problems).
    return st.column_config.NumberColumn(step=widget["step"], help=f"{widget['help']} {widget['label']}: "
                                         f"{range_text(name)}, as on the Select page. Empty: the Select page's value.")


#: What a table shows in a cell with no value (a parameter that does not apply, a run
#: without an error): Streamlit's own placeholder is the word None.
NO_VALUE = "–"


def compare_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The Compare table's settings with the cells that do not apply to their row's method
    emptied: BiLAF's own parameters in a whole-budget baseline's row."""
    baseline = rows["method"].notna() & (rows["method"] != "bilaf")
    return rows.assign(**{name: rows[name].mask(baseline) for name in rows.columns.intersection(BILAF_ONLY_PARAMS)})


#: The Select page's own choices (its other widgets take the selection parameters'), for
#: its widgets and for checking a link's values.
PAGE_OPTIONS = {"budget_unit": ("samples", "% of the pool"), "projection": tuple(MAP_NAMES),
                "color_by": ("pseudo-class", "true label")}


def select_defaults(n: int | None) -> dict:
    """The Select page's starting values for a pool of ``n`` samples: the library's own
    defaults (:class:`bilaf_core.params.SelectionParams`) plus the page's budget, seed and map.
    With ``n`` None (the pool's size not known yet) the budget's is None: it is a share of
    the pool (:data:`DEFAULT_BUDGET_TEXT`)."""
    library = SelectionParams().as_dict()
    return {**{name: library[name] for name in PAGE_PARAMS}, "budget_unit": "samples",
            "budget": None if n is None else default_budget(n), "budget_percent": DEFAULT_BUDGET_PERCENT, "seed": 0,
            "projection": "umap", "color_by": "pseudo-class"}


#: The budget's default in words, before the pool's size (its number of samples) is known.
DEFAULT_BUDGET_TEXT = f"{DEFAULT_BUDGET_PERCENT:g} % of the pool"


def budget_problem(value: float) -> str | None:
    """Why a budget of ``value`` samples is unusable on any pool (a link's 1.5 or -3); None
    when a pool large enough takes it. Its upper bound, the pool's size, is :func:`budget_warning`'s."""
    if value < 1 or not float(value).is_integer():
        return "a budget is a whole number of samples, at least 1"
    return None


def n_cores_problem(value) -> str | None:
    """Why a K of ``value`` (a link's text or number) is unusable on any pool and budget (0,
    -3, 2.5, abc); None when a budget large enough takes it. Its upper bound, the budget and
    the pool's size, is :func:`clamp_n_cores`'s."""
    try:
        k = n_cores_value(value)
    except ValueError:
        k = None
    if k == AUTO or (k is not None and k >= 1):
        return None
    return "K is 'auto' or a whole number, at least 1"


def n_cores_value(value) -> int | str:
    """K as the app holds it: "auto" or a positive int (a table cell or a URL gives text)."""
    text = str(value).strip()
    if text == AUTO:
        return AUTO
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not number.is_integer():  # "1.5" was K = 1, without a word
        raise ValueError(f"K must be 'auto' or a whole number, got {text!r}")
    return int(number)


def _whole(value):
    """A number that is whole as an int (a table's float column holds 3.0); else as given,
    for the check to refuse it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: A selection parameter's value as a widget, a table cell or a URL gives it, made its type.
_KINDS = {"int": _whole, "float": float, "n_cores": n_cores_value, "choice": str}


def selection_counts(result) -> dict[str, int]:
    """The Select page's counts of a selection, by what took part in it: Selected and
    Unselected always; Core for BiLAF; Boundary and Removed only where stage 2 ran
    (:attr:`bilaf_core.Selection.has_stage2`: at K = B it does not, and a whole-budget
    method has none)."""
    counts = result.role_counts()
    shown = {"Selected": result.budget}
    if result.params["method"] == "bilaf":
        shown["Core"] = counts.get("core", 0)
    if result.has_stage2:
        shown.update(Boundary=counts.get("boundary", 0), Removed=counts.get("removed", 0))
    return {**shown, "Unselected": counts.get("unselected", 0)}


#: The key of a selection's ``timings`` that says its stage-1 cores came from a cache
#: (:func:`cores_cached`): an earlier selection with the same K, method and seed made them.
STAGE1_CACHED = "stage1_cached"


def time_text(result) -> str:
    """How long a selection took, in the pages' words: per stage where stage 2 ran, and
    "cached" for a stage 1 that reused an earlier selection's cores (it read "0.00 s")."""
    stage1 = "stage 1 cached" if result.timings.get(STAGE1_CACHED) else f"stage 1 {result.timings['stage1']:.2f} s"
    if result.has_stage2:
        return f"{stage1} · stage 2 {result.timings['stage2']:.2f} s"
    if result.timings.get(STAGE1_CACHED):  # K = B: stage 1's cores are the selection
        return f"cached (the cores of an earlier selection; {result.timings['total']:.2f} s)"
    return f"{result.timings['total']:.2f} s"


def asked_budget(values: dict, n: int) -> int:
    """The whole number of samples the Select page's values ask for (it may lie outside
    the pool; a budget typed with a fraction, 12.5, asks for its whole part)."""
    if values["budget_unit"] == "samples":
        return int(values["budget"])
    return budget_from_percent(n, values["budget_percent"])


def budget_of(values: dict, n: int) -> int:
    """The budget the Select page's values ask for, within the pool."""
    return max(1, min(n, asked_budget(values, n)))


def budget_warning(values: dict, n: int) -> str | None:
    """What the Select page says when :func:`budget_of` had to move the budget asked for
    into 1 .. n, or to its whole part (None when it did not)."""
    asked = asked_budget(values, n)
    typed = float(values["budget"]) if values["budget_unit"] == "samples" else None
    said = (f"A budget of {_number(typed)} samples" if typed is not None
            else f"A budget of {float(values['budget_percent']):g} % of the pool ({asked:,} samples)")
    if asked > n:
        return f"{said} is more than the pool's {n:,}: selecting all {n:,}."
    if asked < 1:
        return f"{said} is less than one sample: selecting 1."
    if typed is not None and typed != asked:
        return f"{said} is not a whole number: selecting {asked:,}."
    return None


def values_in_use(values: dict, n: int) -> dict:
    """The Select page's values as its selection uses them (for the page's address): the
    budget moved into the pool (:func:`budget_of`, a budget of 99,999 selects all 1,797)
    and the seed into the library's (:func:`seed_of`); the others as they are."""
    used = {**values, "seed": seed_of(values["seed"])}
    if budget_warning(values, n):
        budget = budget_of(values, n)
        if values["budget_unit"] == "samples":
            used["budget"] = budget
        else:
            used["budget_percent"] = 100 * budget / n
    return used


def empty_input_warning(name: str, values: dict) -> str:
    """What the Select page says when its number field ``name`` (budget, budget_percent,
    seed) was left empty, or held text that is not a number (a browser sends both as no
    value): the value it keeps using (``values``, the pool's), and what to type."""
    label, kept, what = {
        "budget": ("Budget B", f"selecting B = {_number(float(values['budget']))}", "a number of samples"),
        "budget_percent": ("Budget (% of the pool)", f"selecting {float(values['budget_percent']):g} % of the pool",
                           "a percentage of the pool"),
        "seed": ("Seed", f"selecting with seed {int(values['seed']):,}", "a whole number"),
    }[name]
    return f"The {label} field is empty or not a number: {kept}, the last value given. Type {what} and press Select."


#: The K slider's largest value: a longer slider cannot be moved to one value.
K_SLIDER_MAX = 1000


def n_cores_max(budget: int, n: int) -> int:
    """The largest K the Select page offers: at most the budget B, the pool's size and
    :data:`K_SLIDER_MAX` (select() refuses K above B or N)."""
    return max(1, min(budget, n, K_SLIDER_MAX))


def clamp_n_cores(asked, budget: int, n: int) -> tuple[int | str, str | None]:
    """The K the Select page uses for the K ``asked`` ("auto" or a whole number): moved down to
    :func:`n_cores_max` when above it, with the message that says so (None when not moved)."""
    top = n_cores_max(budget, n)
    if asked == AUTO or not isinstance(asked, int) or asked <= top:
        return asked, None
    limit = (f"the budget B = {budget:,}" if top == budget else f"the pool's {n:,} samples" if top == n
             else f"the slider's largest value, {K_SLIDER_MAX:,}")
    return top, (f"K = {asked:,} is more than {limit}: selecting with K = {top:,}."
                 + (" Raise the budget first for more cores." if top == budget else ""))


def n_cores_to_use(asked, budget: int, n: int, held: tuple | None) -> tuple[int | str, tuple | None, str | None]:
    """The Select page's K for the K ``asked`` (what its slider holds), with a K the page
    moved down before: ``held`` is (the K chosen, the K it was moved to) or None. Returns
    (K to use, what to hold now, the message). A K above :func:`n_cores_max` is moved down
    and held (:func:`clamp_n_cores`); it comes back once the budget allows it, unless the
    user set K since (``asked`` is no longer the K it was moved to). A K of 20 stayed 5 for
    good after one budget typed as 5, and the line under the counts called it set by hand."""
    note = None
    if held is not None:
        chosen, moved_to = held
        if asked != moved_to:  # the user set K since: theirs now
            held = None
        elif chosen <= n_cores_max(budget, n):
            asked, held, note = chosen, None, f"K = {chosen:,} is back: the budget B = {budget:,} allows it again."
    used, moved = clamp_n_cores(asked, budget, n)
    if moved:
        held = (held[0] if held else asked, used)
        note = f"{moved} K = {held[0]:,} comes back when the budget allows it."
    return used, held, note


def ray_address_problem(address: str) -> str | None:
    """Why the Data page cannot use ``address`` as a Ray cluster's address (None when it
    can): the Ray engine's own check, said when the address is given rather than when a
    later load first reaches the cluster."""
    from bilaf_core.ray_engine import check_address

    try:
        check_address(address)
    except ValueError as exc:
        return str(exc)
    return None


#: A zip of images, the Data page's other upload.
IMAGE_ZIP_TYPES = (".zip",)
#: What the Data page's uploader takes (its ``type=``; the browser refuses any other file):
#: a feature file (the types the loader reads, :data:`bilaf_core.features.FEATURE_FILE_TYPES`)
#: or a zip of images.
UPLOAD_TYPES = FEATURE_FILE_TYPES + IMAGE_ZIP_TYPES
#: The feature files the app reads, in words: the loader's types and its .npz arrays.
FEATURE_FILE_TEXT = (f"{', '.join(FEATURE_FILE_TYPES)}; an .npz holds its rows under "
                     f"{' or '.join(map(repr, NPZ_FEATURE_KEYS))}")


def folder_problem(path: str) -> str | None:
    """Why a typed image folder is no folder: it names a file (None when it does not, or
    when it names nothing: the loader says a missing folder is not found). A path outside
    the allowed folders is refused first (:func:`check_allowed` raises), so that the answer
    never tells whether a file exists outside them."""
    if path.strip() and Path(check_allowed(path.strip())).is_file():
        return f"{path.strip()} is a file, not a folder: give the folder that holds the images"
    return None


def _number(value: float) -> str:
    """A number as typed: 12, 100,000 or 12.5 (not 12.0 or 1e+05)."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.10g}"


def seed_of(asked: int) -> int:
    """A seed typed on a page (the Select page's, the Finetune page's), moved into the seeds
    the library takes (0 .. :data:`bilaf_core._validation.MAX_SEED`)."""
    return min(max(int(asked), 0), MAX_SEED)


def seed_warning(asked: int, *, doing: str = "selecting", again: str = "(Advanced) for another selection") -> str | None:
    """What a page says when :func:`seed_of` had to move the seed asked for (None when it
    did not): ``doing`` what with the seed used, and where to type another for what."""
    problem = range_problem("seed", float(asked))
    if problem is None:
        return None
    what = "a whole number" if problem == NOT_WHOLE else "a seed in that range"  # 1.5 was used as 1
    return f"Seed {_number(float(asked))} is {problem}: {doing} with seed {seed_of(asked):,}. Type {what} {again}."


def selection_params(values: dict) -> tuple:
    """The hashable parameter tuple of :func:`selection` from the Select page's values
    (:meth:`SelectionParams.key`; a widget's or a table cell's text made the right type)."""
    typed = {name: _KINDS[_SPECS[name].kind](values[name]) for name in PAGE_PARAMS}
    return SelectionParams(**typed, random_state=seed_of(values["seed"])).key()


def param_problem(name: str, value) -> str | None:
    """Why the library would refuse ``value``, already of its type, for the Select page's
    setting ``name`` (a selection parameter, by :class:`SelectionParams`; the seed, by the
    Select page's range, :func:`range_text`); None when it takes it, or when ``name`` is neither."""
    if name == "seed":  # in the page's words and range, not the library's (faiss's limit)
        return None if range_problem("seed", float(value)) is None else f"this input takes {range_text('seed')}"
    try:
        if name in _SPECS:
            SelectionParams(**{name: value})
    except ValueError as exc:
        return str(exc)
    return None


def compare_problems(row: dict, budget: int, n: int) -> dict[str, str]:
    """The filled cells of a Compare row that the Select page would not take: column ->
    why, in the Select page's words and range (:func:`range_problem`, the one definition
    of its bounds: a P_rm of 0.95 is refused as on its slider). A cell that is no value of
    its parameter at all is refused by the library's own check (:func:`param_problem`)."""
    problems = {}
    for name, value in row.items():
        if value is None or pd.isna(value):
            continue
        try:  # a cell's text or float made the parameter's type
            typed = n_cores_value(value) if name == "n_cores" else _whole(value) if name not in _SPECS else (
                _KINDS[_SPECS[name].kind](value))
        except ValueError:
            typed = None  # no value of it at all (a K of abc): said as a fraction is
        if name in ("seed", "n_cores") or _SPECS[name].kind in ("int", "float"):
            problem = None if typed == AUTO else NOT_WHOLE if typed is None else range_problem(name, float(typed),
                                                                                               budget, n)
            if problem == NOT_WHOLE:  # a K of abc, a seed of 1.5: what the page takes
                problems[name] = f"it is not {range_text(name, budget, n, auto=True)}"
            elif problem:
                top = page_range(name, budget, n)[1]
                problems[name] = f"it is {problem}, the Select page's range" + (
                    f" (K is at most the budget B = {budget:,})" if name == "n_cores" and top == budget else "")
            continue
        problem = param_problem(name, typed)
        if problem:
            problems[name] = problem
    return problems


def compare_setting(select_values: dict, row: dict, *, budget: int | None = None,
                    n: int | None = None) -> tuple[dict, str]:
    """One Compare row: the Select page's values with the row's filled cells on top (an
    empty cell, as in a new row, keeps the Select page's value), and the setting's name:
    the method, BiLAF's K, P_rm and delta, and every other cell of the row (the seed, the
    denoiser) whose value differs from the Select page's, so two rows that select
    differently never read the same ("bilaf K=5 Prm=0.1 δ=1.1 seed=3"). Given the
    ``budget`` of ``n`` samples, a BiLAF row at K = B (:func:`row_runs_stage2`) names no
    stage-2 setting, which it does not use ("bilaf K=auto, K = B: no stage 2")."""
    values = {**select_values, **{k: v for k, v in row.items() if v is not None and not pd.isna(v)}}
    stage2 = budget is None or row_runs_stage2(values, budget, n)
    name = str(values["method"])
    if values["method"] == "bilaf":
        name += f" K={str(values['n_cores']).strip()}" + (
            f" Prm={float(values['removal_ratio']):g} δ={float(values['opponent_penalty']):g}" if stage2
            else ", K = B: no stage 2")
    for cell in row:
        if cell in ("method", "n_cores", "removal_ratio", "opponent_penalty") or cell not in select_values or (
                values["method"] != "bilaf" and cell in BILAF_ONLY_PARAMS) or (not stage2 and cell in STAGE2_PARAMS):
            continue
        mine, page = (_whole(float(values[cell])), _whole(float(select_values[cell]))) if cell == "seed" else (
            values[cell], select_values[cell])
        if mine != page:
            name += f" {cell}={mine}"
    return values, name


#: How the Compare page's "runs with" table marks a value a row takes from the Select page
#: (its cell empty, or not applied), a parameter its method does not use, and a stage-2
#: parameter of a BiLAF row at K = B, where stage 2 does not run (:func:`runs_stage2`, the
#: fact behind the Select page's "stage 2 did not run" and its counts).
FROM_SELECT, NOT_USED = " (Select)", "not used"
NO_STAGE2 = f"{NOT_USED} (K = B: no stage 2)"


def cell_text(value, *, quoted: bool = True) -> str:
    """A Compare cell's value as the page writes it, in its tables and its warnings: a
    number as typed (0, not 0.0; 1,000; 0.95), and text that is no number (a K of auto, a
    typed abc) as it is, ``quoted`` in a sentence ('auto')."""
    text = str(value).strip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isfinite(number) and not isinstance(value, bool):
        return _number(number)
    return repr(text) if quoted else text


def compare_not_applied(number: int, method: str, name: str, given, why: str, select_value) -> str:
    """What the Compare page says of row ``number``'s cell ``name`` that the Select page
    would not take (:func:`compare_problems`' ``why``): the value typed and the Select
    page's value the row uses instead, both quoted by :func:`cell_text`."""
    return (f"Row {number} ({method}), {name} = {cell_text(given)} was not applied: {why}. This row uses the "
            f"Select page's {name} = {cell_text(select_value)}; type a value in that range.")


def row_runs_stage2(values: dict, budget: int, n: int) -> bool:
    """Whether a selection with the page values ``values`` (a Compare row's, on the Select
    page's) runs BiLAF's stage 2 at ``budget`` on ``n`` samples (:func:`runs_stage2`, with
    the K it resolves to; a K the selection would refuse: True, its error is the page's)."""
    if values["method"] != "bilaf":
        return False
    try:
        n_cores = resolve_n_cores(n_cores_value(values["n_cores"]), n, budget).n_cores
    except ValueError:
        return True
    return runs_stage2(values["method"], n_cores, budget)


def compare_effective(select_values: dict, rows: list[dict], numbers: list[int], budget: int, n: int) -> pd.DataFrame:
    """What each Compare row runs with, cell by cell (the table under the editor, where an
    empty cell showed only "–"): the row's own value, the Select page's marked
    :data:`FROM_SELECT`, :data:`NOT_USED` for BiLAF's parameters in a whole-budget
    method's row, or :data:`NO_STAGE2` for the stage-2 ones of a BiLAF row at K = B
    (:func:`row_runs_stage2` at ``budget`` of ``n``). ``rows``: the cells applied
    (:func:`compare_problems`' emptied)."""
    table = []
    for number, row in zip(numbers, rows):
        values, _ = compare_setting(select_values, row)
        stage2 = row_runs_stage2(values, budget, n)
        line = {"row": number}
        for name, cell in row.items():
            if values["method"] != "bilaf" and name in BILAF_ONLY_PARAMS:
                line[name] = NOT_USED
            elif not stage2 and name in STAGE2_PARAMS:
                line[name] = NO_STAGE2
            elif cell is None or pd.isna(cell):
                line[name] = cell_text(values[name], quoted=False) + FROM_SELECT
            else:
                line[name] = cell_text(values[name], quoted=False)
        table.append(line)
    return pd.DataFrame(table)


def selection(source: Source, budget: int, params: tuple, *, progress=None):
    """Run the selection (once per source, budget and parameters); BiLAF reuses the
    stage-1 cores of the same (K, method, seed) and their stage-2 geometry. ``progress``
    (fraction, message) is called during stage 1 and the baselines."""
    def compute():
        options = dict(params)
        n_cores, core_method = options.pop("n_cores"), options.pop("core_method")
        if options["method"] != "bilaf":
            return select(features(source), budget, progress=progress, **options)
        split = resolve_n_cores(n_cores, len(feature_set(source).ids), budget)  # K > B: select()'s own error
        n_cores = split.n_cores
        started, cached = time.perf_counter(), cores_cached(source, n_cores, core_method, options["random_state"])
        options["cores"] = cores(source, n_cores, core_method, options["random_state"], progress=progress)
        stage1 = time.perf_counter() - started  # about 0 where an earlier selection's cores are reused
        options["geometry"] = geometry(source, n_cores, core_method, options["random_state"], options["variant"])
        result = select(features(source), budget, **options)
        # The cores came from this stage 1, not from the user: record how they were made, why
        # this K, and how long this selection's stage 1 took (select() is given them: 0 s), or
        # that its cores were cached (an earlier selection's: stage 1 took no time).
        return replace(result, params={**result.params, "core_method": core_method, "n_cores_rule": split.reason},
                       timings={**result.timings, "stage1": stage1, "total": result.timings["total"] + stage1,
                                STAGE1_CACHED: cached})

    def compute_and_trim():
        try:
            return compute()
        finally:
            give_back_freed_memory()

    return _remembered("selection", (source, budget, params), compute_and_trim, max_entries=32)


def give_back_freed_memory() -> None:
    """Hand the heap memory a selection freed back to the system (glibc's ``malloc_trim``;
    nothing where there is none). glibc keeps freed heap pages for reuse, and a stage 2
    on a 1,281,167-sample pool frees gigabytes of mid-sized blocks: the server's resident
    memory grew from 13.1 to 19.5 GB over four P_rm changes, and stays at 10.8-11.0 GB
    with this call (no change in time)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # not glibc (macOS, musl) or no C library handle (Windows)
        return None


def selection_cached(source: Source, budget: int, params: tuple) -> bool:
    """Whether :func:`selection` has this selection already (it returns at once)."""
    return (source, budget, params) in _memos()[1].get("selection", {})


@st.cache_resource(show_spinner=False, max_entries=4)
def _pca(source: Source, seed: int) -> np.ndarray:
    # kept in memory too: every rerun draws it (on disk it is keyed by a content hash, read back each time)
    return project_2d(features(source), method="pca", random_state=seed)


@st.cache_resource(max_entries=16)
def _disk_projection(source: Source, method: str, seed: int) -> np.ndarray | None:
    return cached_projection(features(source), method=method, random_state=seed)


@st.cache_resource(max_entries=4)
def space(source: Source, normalize: bool) -> np.ndarray:
    """The features as a selection sees them (L2-normalised or raw); shared read-only."""
    return _frozen(l2_normalize(features(source))) if normalize else features(source)


def _frozen(array: np.ndarray) -> np.ndarray:
    """``array``, made read-only: shared by every session, and hashed once for the disk
    caches (:func:`bilaf_core._cache.features_digest`)."""
    array.setflags(write=False)
    return array


@st.cache_data(show_spinner="Measuring the pool's neighbourhood scale ...", max_entries=16)
def coverage_radius(source: Source, normalize: bool) -> float:
    """The diagnostics' coverage radius: a property of the feature set, computed once
    (and kept on disk beside the feature cache, for a restarted app)."""
    return default_coverage_radius(space(source, normalize), cache_dir=default_cache_dir())


def guide(source: Source, result) -> tuple[Guidance | None, float | None]:
    """The measured guidance for this selection's budget (:func:`bilaf_core.guidance.guidance`)
    and, where it names a diagnostic, that diagnostic's value for this selection, on the
    L2-normalised pool as the benchmark measured it (once per selection)."""
    found = guidance(result.budget / len(feature_set(source).ids))
    if found is None or found.diagnostic is None:
        return found, None
    unit = space(source, True)
    # the pseudo-classes are a property of the pool: made once, shared by every selection
    pseudo = (_remembered("pseudo_classes", source, lambda: pseudo_classes(unit), max_entries=4)
              if found.diagnostic == "pseudo_class_kl" else None)
    key = (source, result.budget, tuple(sorted(result.params.items())), found.diagnostic)
    value = _remembered("guide", key, lambda: selection_diagnostics_of(unit, result.indices, names=(found.diagnostic,),
                                                                     pseudo=pseudo)[found.diagnostic],
                        max_entries=64)
    return found, value


def selection_diagnostics(source: Source, result, *, normalize: bool) -> dict:
    """:func:`bilaf_core.diagnostics` of a selection in the given space, estimated on
    :data:`DIAGNOSTICS_SAMPLE` pool samples, with the feature set's coverage radius."""
    return diagnostics(space(source, normalize), result.indices, cluster=result.cluster,
                       labels=feature_set(source).named_labels, radius=coverage_radius(source, normalize),
                       max_pool_samples=DIAGNOSTICS_SAMPLE)


#: Niceness of the background projection process: a UMAP started on a first load then
#: takes only idle CPU instead of slowing that load's own work and drawing. (Not timed on
#: its own: with the torch preload, the cold first load went from 19.9 s to 17.8-18.7 s
#: in Chromium on 2 cores, where single runs vary by about a second.)
PROJECTION_NICENESS = 10


@st.cache_resource
def _projection_jobs() -> tuple[ProcessPoolExecutor, dict]:
    # A separate process: UMAP's numba compilation holds the GIL for seconds, which in a
    # thread would stall every page's reruns. "spawn" does not copy the server's threads.
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=os.nice, initargs=(PROJECTION_NICENESS,)), {}


@st.cache_resource(show_spinner=False)
def preload_stage1() -> threading.Thread:
    """Import stage 1's torch modules (:func:`bilaf_core.core.preload`) and the charts'
    altair in a background thread, once per server process, while a first page still
    loads its features."""
    def imports() -> None:
        preload()
        import altair  # noqa: F401  (the page's first bar chart imports it: 0.5 s)

    thread = threading.Thread(target=imports, name="bilaf-preload", daemon=True)
    thread.start()
    return thread


def projection(source: Source, method: str, seed: int = 0, *, start: bool = True) -> np.ndarray | None:
    """The 2-D map, or None while a background job computes it (PCA is immediate)."""
    if method == "pca":
        return _pca(source, seed)
    executor, jobs = _projection_jobs()
    key = (source, method, seed)
    job: Future | None = jobs.get(key)
    if job is None:
        on_disk = _disk_projection(source, method, seed)
        if on_disk is not None or not start:
            return on_disk
        jobs[key] = job = executor.submit(project_2d, features(source), method=method, random_state=seed,
                                          progress=ProgressFile.for_job(key).reset())  # read by the page
    if not job.done():
        return None
    return job.result()  # re-raises a failed job's error for the page to show


def map_to_draw(source: Source, method: str, seed: int = 0, *, start: bool = False) -> tuple[np.ndarray, str, str | None]:
    """(coords, shown, failure): the ``method`` map when it is ready, else PCA (``shown``
    names the one returned); ``failure`` says why the asked map failed (its background
    job's error; PCA is shown instead), else None. ``shown != method`` without a failure:
    the map is still being computed (or, with ``start=False``, was never asked for)."""
    try:
        coords = projection(source, method, seed, start=start)
    except Exception as exc:  # a failed background job (any error of UMAP or t-SNE): say so once, show PCA
        return projection(source, "pca", seed), "pca", f"The {MAP_NAMES[method]} map failed ({exc}); showing PCA."
    if coords is None:
        return projection(source, "pca", seed), "pca", None
    return coords, method, None


def run_store() -> RunStore | None:
    """The run history (the session's choice, else the default store). When it cannot be
    opened (corrupted) or written (read-only, locked), say why on the page and offer a
    fresh store beside it; None when it cannot even be read."""
    path = Path(st.session_state.get("store_path") or default_store_path())
    try:
        store = RunStore(path)
    except StoreError as exc:
        st.error(f"{exc}")
        _offer_new_store(path)
        return None
    problem = store.write_problem()
    if problem is not None:  # the history still shows; new runs could not be recorded
        st.warning(f"{problem}. The history below is read-only until then.")
        _offer_new_store(path)
    return store


def _offer_new_store(path: Path) -> None:
    folder = path.parent if os.access(path.parent, os.W_OK) else Path(tempfile.gettempdir())
    fresh = folder / f"runs-{time.strftime('%Y%m%d-%H%M%S')}.sqlite"
    if st.button(f"Start a new, empty run store ({fresh.name})", key="new_store"):
        st.session_state.store_path = str(fresh)
        st.rerun()


def unpacked_zip(archive: Path) -> Path:
    """The image folder of an uploaded zip: unpacked beside it (once per archive content,
    checked entry by entry by :func:`bilaf_core.data.extract_image_zip`), and, when the zip
    holds a single top folder (a zipped folder, the usual way to make one), that folder,
    so its subfolders are the classes."""
    folder = archive.with_suffix("")
    if not folder.is_dir():
        partial = folder.with_name(folder.name + ".partial")  # renamed only when complete
        extract_image_zip(archive, partial)
        partial.rename(folder)
    entries = list(folder.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


def zip_prefix(source: Source) -> str:
    """Where an uploaded zip's image folder lies inside the zip ("" at its top): the prefix
    of its Label Studio paths."""
    root = Path(source.root)  # uploads/<content hash>/<zip name>[/<its single top folder>]
    return root.name if root.resolve().parent.parent.parent == upload_dir().resolve() else ""
