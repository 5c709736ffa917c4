"""What a user made, kept per pool: widget values, manual marks, the map's lasso.

Streamlit forgets a widget's value when its page is left (its widgets are not drawn on
that run) and everything on a reload. So every widget that matters is created through
:func:`kept`: its value lives in the :class:`PoolState` of the current pool (keyed by
the source's fingerprint), is put back into the widget when the widget comes back (page
switch, another pool and back), and the values named in :data:`URL_FIELDS` travel in
the page's URL (``st.query_params``), so a reload or a shared link reopens the same
selection. Marks belong to their pool and are never applied to another one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import streamlit as st

from bilaf_core._io import atomic_open
from bilaf_core.data import DATASETS
from bilaf_core.features import close_backbone_names, default_cache_dir, is_backbone_name

from .jobs import DEFAULT_PROTOCOL, PROTOCOL_NAMES
from .sources import FEATURE_FILE_WAYS, feature_file_path
from .state import (DEFAULT_BUDGET_TEXT, OFFERED_BACKBONES, PAGE_OPTIONS, RANGED_PARAMS, Source, budget_of,
                    budget_problem, budget_warning, check_allowed, current_source, feature_set, n_cores_problem,
                    page_range, param_problem, select_defaults, selection, selection_params, values_in_use)

#: Widget values written to the URL (besides the source); everything else stays in the session.
URL_FIELDS = ("method", "budget_unit", "budget", "budget_percent", "n_cores", "removal_ratio", "include_ratio",
              "k_neighbors", "opponent_penalty", "core_method", "variant", "denoise", "criterion", "process", "seed",
              "projection", "color_by", "protocol")
#: The choices of the URL's fields that are no selection parameter: the Select page's own,
#: and the Finetune page's protocol (a reload went back to Linear probe).
URL_OPTIONS = {**PAGE_OPTIONS, "protocol": tuple(PROTOCOL_NAMES)}
#: URL keys of the source's fields (short, so a shared link stays readable).
SOURCE_KEYS = {"dataset": "data", "root": "root", "backbone": "backbone", "weights": "weights",
               "feature_file": "file", "test_root": "test", "upload": "upload"}
#: Query parameters Streamlit itself reads (an embedded app's), never reported as unknown.
_STREAMLIT_URL_KEYS = ("embed", "embed_options")
#: The ``data=`` values a link may carry: the library's data sets and a feature file.
URL_DATASETS = (*DATASETS, "features")


class Halt(Exception):
    """Ends a page early (like ``st.stop()``) but lets app.py finish the frame: the sidebar
    and the URL are written after the page has run."""


def halt() -> None:
    raise Halt


def pool_key(source: Source) -> str:
    """The fingerprint of a pool: its source's fields (an upload's path holds its content hash)."""
    return hashlib.sha256(json.dumps(asdict(source), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class PoolState:
    """Everything a user made on one pool."""

    key: str
    values: dict = field(default_factory=dict)  # widget name -> value
    url_values: dict = field(default_factory=dict)  # from a shared link / reload, as strings, until used
    url_notes: dict = field(default_factory=dict)  # URL values not used: name -> (text, value used, why), see url_warning
    notes: dict = field(default_factory=dict)  # a page's messages about values it moved (K above B), until a change
    held: dict = field(default_factory=dict)  # kept widget -> the value chosen, above its range now (kept's restore)
    excluded: set = field(default_factory=set)  # feature-set rows marked "exclude from the export"
    forced: set = field(default_factory=set)  # rows marked "force into the export"
    marks_loaded: bool = False  # read from disk once per session (load_marks)
    n: int | None = None  # the pool's size, once a page asked for its settings (the sidebar's defaults)

    @property
    def n_marks(self) -> int:
        return len(self.excluded) + len(self.forced)


def _marks_file(pool: PoolState) -> Path:
    return default_cache_dir() / "marks" / f"{pool.key}.json"


def load_marks(pool: PoolState, ids: np.ndarray) -> None:
    """Read the pool's marks from disk once per session (they outlive a reload or a
    restart); they are stored by sample id, so a changed pool keeps the marks of the
    samples it still has."""
    if pool.marks_loaded:
        return
    pool.marks_loaded = True
    try:
        saved = json.loads(_marks_file(pool).read_text())
    except (OSError, ValueError):
        return  # none yet, or unreadable: start without
    row = {str(sample): i for i, sample in enumerate(ids)}
    for name in ("excluded", "forced"):
        getattr(pool, name).update(row[s] for s in saved.get(name, []) if s in row)


def save_marks(pool: PoolState, ids: np.ndarray) -> None:
    """Write the pool's marks (by sample id), atomically."""
    marks = {name: sorted(str(ids[i]) for i in getattr(pool, name)) for name in ("excluded", "forced")}
    with atomic_open(_marks_file(pool), "w") as handle:
        json.dump(marks, handle)


def row_marks(pool: PoolState, ids: np.ndarray) -> np.ndarray:
    """(N,) str: each pool row's manual mark, "excluded", "forced" or "unmarked"
    (:data:`studio.maps.MARKS`), the pool's marks read from disk first (:func:`load_marks`)."""
    load_marks(pool, ids)
    marks = np.full(len(ids), "unmarked", dtype="<U8")
    marks[sorted(pool.excluded)] = "excluded"
    marks[sorted(pool.forced)] = "forced"
    return marks


def marks_drawn(pool: PoolState) -> tuple:
    """The pool's marks as a value for a map's ``drawn`` (:func:`studio.gallery.selectable_map`):
    new marks draw a new map."""
    return tuple(sorted(pool.excluded)), tuple(sorted(pool.forced))


def clear_marks(pool: PoolState, ids: np.ndarray) -> None:
    pool.excluded.clear()
    pool.forced.clear()
    save_marks(pool, ids)


def pool_state(source: Source) -> PoolState:
    pools = st.session_state.setdefault("pools", {})
    key = pool_key(source)
    if key not in pools:
        pools[key] = PoolState(key)
    return pools[key]


def app_state() -> PoolState:
    """Values that belong to the session, not to a pool (the Data page's form)."""
    return st.session_state.setdefault("pools", {}).setdefault("app", PoolState("app"))


def _coerce(text: str, default: Any) -> Any:
    """A URL's text as the type of its default (None: the budget's, a number not known before
    the pool's size); a ValueError says why it is none."""
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes")
    if default is None or isinstance(default, (int, float)):
        try:
            value = float(text)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(value):  # float() takes "nan" and "inf": no slider accepts them
            raise ValueError("not a finite number")
        # a whole number as an int; 12.5 for an int stays 12.5, for its own check or warning to refuse
        return int(value) if not isinstance(default, float) and value.is_integer() else value
    return int(text) if text.isdigit() else text  # K: "auto" or a number


#: The checks of the settings whose range needs the pool, of what no pool takes (a budget of
#: 1.5, a K of 0): their upper bound waits for a page that reads the pool.
_POOL_FREE_CHECKS = {"budget": budget_problem, "n_cores": n_cores_problem}


def _url_problem(name: str, value: Any) -> str | None:
    """Why a URL's value cannot be used, by the checks of its one definition (the
    selection parameters' and the seed's, :func:`param_problem`; the page's own choices;
    the budget's and K's, :data:`_POOL_FREE_CHECKS`, whatever the pool); None when it can. A
    budget above the pool, or a K above the budget, is not refused here: the Select page
    moves it into the pool (or below the budget) with a warning."""
    check = _POOL_FREE_CHECKS.get(name)
    problem = check(value) if check else param_problem(name, value)
    if problem is None and name in URL_OPTIONS and value not in URL_OPTIONS[name]:
        return _choices(name, URL_OPTIONS[name])
    return problem


def _choices(name: str, options) -> str:
    options = list(options)
    if len(options) <= 8:
        return f"{name} must be one of {', '.join(map(repr, options))}"
    return f"{name} must be one of this input's {len(options):,} values, {options[0]!r} to {options[-1]!r}"


def _valid(value: Any, options, min_value, max_value) -> Any:
    """The value if a widget accepts it, else None (a stale or hand-edited URL, another pool's range)."""
    if options is not None:
        if isinstance(value, list):  # a multiselect: the choices it still offers; none of them: the default
            offered = [v for v in value if v in list(options)]
            return offered if offered or not value else None
        return value if value in list(options) else None
    if min_value is not None and value < min_value:
        return min_value
    if max_value is not None and value > max_value:
        return max_value
    return value


def setting(state: PoolState, name: str, default: Any) -> Any:
    """A value the user set on this pool, else the one a URL carried, else ``default``. A
    URL's value that cannot be used is noted for :func:`url_warning` and dropped."""
    if name in state.values:
        return state.values[name]
    if name in state.url_values:
        try:
            value = _coerce(state.url_values[name], default)
            # moved into the Select page's range first (k = 80: 50), on every page, so that a number
            # outside it is said in that range: P_rm = 1 was refused in the library's "[0, 1)" beside
            # a slider that offers 0 to 0.9
            used = _in_range(name, value)
            problem = _url_problem(name, used)
        except ValueError as exc:
            problem = str(exc)
        if problem is None:
            if used != value:
                low, high = page_range(name)
                state.url_notes[name] = (state.url_values[name], used, f"this input takes {low:g} to {high:g}")
                state.url_values[name] = str(used)
            return used
        state.url_notes[name] = (state.url_values.pop(name), default, problem)
    return default


def _in_range(name: str, value: Any) -> Any:
    """A selection parameter's number moved into the Select page's range for it (its
    slider's, :func:`studio.state.page_range`); other values as they are. A link's P_rm
    of 0.95 was used on Inspect while the Select page's slider showed 0.9."""
    if name not in RANGED_PARAMS:
        return value
    low, high = page_range(name)
    return min(max(value, low), high)


def _holds(state: PoolState, name: str) -> bool:
    """Whether kept widget ``name`` exists and was last seeded for this pool (:func:`kept`)."""
    return name in st.session_state and st.session_state.get("_widget_pool", {}).get(name) == state.key


def pending(state: PoolState, name: str, default: Any) -> Any:
    """The value kept widget ``name`` holds before it is drawn on this run: what the user
    left in it (a form's submitted value, which a widget whose range changes on this run
    would lose: K moved with a new budget), else the pool's (:func:`setting`)."""
    return st.session_state[name] if _holds(state, name) else setting(state, name, default)


def put(state: PoolState, name: str, value: Any) -> None:
    """Make ``value`` what kept widget ``name`` shows when it is drawn next on this run (a
    value the page had to move, such as K above a new budget)."""
    if _holds(state, name):
        st.session_state[name] = value
    else:
        state.values[name] = value


def kept(widget: Callable, name: str, label: str, *, default: Any, state: PoolState, options=None,
         min_value=None, max_value=None, restore: bool = False, **kwargs) -> Any:
    """Create ``widget`` (e.g. ``st.slider`` or ``column.selectbox``) with key ``name``,
    its value kept in ``state``: seeded from there (else from the URL, else ``default``)
    whenever the widget is new on this run, was last seeded for another pool or has
    another range or other options than on the last run; the value it returns is stored
    back. Out-of-range values are clamped, unknown options
    replaced by the default (a multiselect keeps the choices still offered; the default
    when none is). With ``restore``, a value a narrower range clamped (or fewer options
    cut) is held (:func:`held`) and comes back when the range allows it again, until the
    user moves the widget (Learn's Budget B stayed 200 after Points went to 200 and back
    to 600; Inspect's roles lost the boundary picks at K = B and got them back at K < B)."""
    owners = st.session_state.setdefault("_widget_pool", {})
    # A widget whose range or options change is a new widget to Streamlit, which then
    # starts it at its minimum (Learn's Budget B fell from 60 to 2 when Points lowered
    # its maximum): seed it again from the kept value, clamped to the new range.
    ranges = st.session_state.setdefault("_widget_range", {})
    span = (min_value, max_value, None if options is None else tuple(options))
    seeded = name not in st.session_state or owners.get(name) != state.key or ranges.get(name, span) != span
    if seeded:
        asked = pending(state, name, default)  # a new range: what the user left in the widget, if this pool's
        if restore:
            asked = state.held.pop(name, asked)  # the value chosen before a narrower range clamped it
        value = _valid(asked, options, min_value, max_value)
        st.session_state[name] = default if value is None else value
        owners[name] = state.key
        if restore and _differs(st.session_state[name], asked):
            state.held[name] = asked
        if value != asked and name not in state.values and name in state.url_values:  # a link's, which this widget lacks
            why = (_choices(name, options) if options is not None
                   else f"this input takes {min_value:g} to {max_value:g}" if None not in (min_value, max_value)
                   else f"this input takes at least {min_value:g}" if min_value is not None
                   else f"this input takes at most {max_value:g}")
            state.url_notes[name] = (state.url_values.pop(name), st.session_state[name], why)
    ranges[name] = span
    args = () if options is None else (options,)
    bounds = {k: v for k, v in (("min_value", min_value), ("max_value", max_value)) if v is not None}
    value = widget(label, *args, key=name, **bounds, **kwargs)
    if value is None and default is not None:  # an emptied number field (value=None): the pool keeps its last
        return None                            # value, the page says so (state.empty_input_warning)
    if name in state.values and _differs(value, state.values[name]):
        changed(state)
        if not seeded:  # the user moved it: their new choice replaces the held one
            state.held.pop(name, None)
    state.values[name] = value
    return value


def held(state: PoolState, name: str) -> Any:
    """The value the user chose for kept widget ``name`` (made with ``restore``) that its
    range now clamps, which comes back when the range allows it; None when none is held."""
    return state.held.get(name)


def _differs(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except (TypeError, ValueError):  # arrays: no single truth value
        return a is not b


def changed(state: PoolState) -> None:
    """The user changed a setting: what the app said about the values it could not use or
    had to move (a link's, K above B) no longer applies, and goes."""
    state.notes.clear()
    _forget_link(state)


def settings(source: Source, n: int) -> dict:
    """The Select page's values for this pool (set, from the URL, or the defaults)."""
    state = pool_state(source)
    state.n = n
    return {name: setting(state, name, default) for name, default in select_defaults(n).items()}


def current_selection(source: Source, n: int, *, progress=None):
    """The selection the Select page's values ask for (computed once, then cached); every
    page shows this one. Raises ValueError for parameters select() refuses."""
    values = settings(source, n)
    return selection(source, budget_of(values, n), selection_params(values), progress=progress)


@contextmanager
def progress_bar(what: str):
    """A progress callback (fraction, message) drawing a bar with the time left; the bar
    goes when the work ends. Each update also lets Streamlit stop work nobody waits for
    any more (a newer rerun, a closed tab)."""
    from .maps import time_left  # the Select page has imported it (plotly) already

    slot = st.empty()
    started = time.perf_counter()

    def report(fraction: float, message: str) -> None:
        # time_left waits for 5 % of the work: CIFAR-10's stage 1 said "about 703 s left"
        # from its first step (torch's start-up in it) and took 30 s
        eta = time_left(fraction, time.perf_counter() - started)
        slot.progress(min(1.0, max(0.0, fraction)), text=f"{what}: {message}{eta}")

    try:
        yield report
    finally:
        slot.empty()


def source_from_url(params: dict[str, str]) -> tuple[Source | None, str | None]:
    """The source a URL names, checked like a typed one (its folders; its feature file,
    which is read; its backbone's name), or None and why not (the link's values, why, and
    what to do: an unknown backbone is named beside an unknown data set)."""
    given = {name: params.get(key, "") for name, key in SOURCE_KEYS.items()}
    if not given["dataset"]:
        return None, None
    not_opened = "The link's data source was not opened: "
    why = None
    if given["dataset"] not in URL_DATASETS:
        why = f"data={given['dataset']!r} is none of this app's ({', '.join(URL_DATASETS)})."
    elif given["dataset"] == "features" and not given["feature_file"]:
        why = f"it names a feature file but not which one (no file= parameter); {FEATURE_FILE_WAYS}."
    elif given["dataset"] == "folder" and not given["root"]:
        why = "it names an image folder but not which one (no root= parameter); type the folder on the Data page."
    else:
        try:
            for name in ("root", "weights", "test_root"):
                if given[name]:
                    given[name] = check_allowed(given[name])
            if given["feature_file"]:
                given["feature_file"] = feature_file_path(given["feature_file"])
        except ValueError as exc:
            why = f"{exc}."
    # a feature file's backbone is only the name of what made it; any other source's is loaded
    bad_backbone = given["dataset"] != "features" and given["backbone"] and not is_backbone_name(given["backbone"])
    said = [why] if why else []
    if bad_backbone:
        said.append(_backbone_problem(given["backbone"]))
    if said:
        return None, not_opened + " ".join(said)
    if not given["backbone"] and given["dataset"] != "features":
        given["backbone"] = Source().backbone
    source = Source(**given)
    if source.feature_file:
        try:
            feature_set(source)  # read once here (the pages find it cached): a file of no features is said now
        except ValueError as exc:
            return None, f"{not_opened}{exc}."  # the loader's messages name the file
    return source, None


def _backbone_problem(name: str) -> str:
    """Why a link's ``backbone=`` is none: the names the Data page offers and a close guess."""
    near = close_backbone_names(name, preferred=OFFERED_BACKBONES, n=1)
    return (f"backbone={name!r}" + (f" (did you mean {near[0]}?)" if near else "") + " is no backbone this app "
            f"knows; it takes {', '.join(OFFERED_BACKBONES)} or another timm model name (the Data page's 'Other "
            "timm model').")


def unknown_url_keys(params: dict[str, str]) -> str | None:
    """What a link carries that is no parameter of this app (a misspelt ``bugdet=50`` was
    dropped without a word), each with the parameter it most likely meant; None when
    every key is known."""
    import difflib

    known = list(SOURCE_KEYS.values()) + list(URL_FIELDS)
    unknown = [key for key in params if key not in known and key not in _STREAMLIT_URL_KEYS]
    if not unknown:
        return None
    parts = []
    for key in unknown:
        near = difflib.get_close_matches(key, known, n=1)
        parts.append(f"{key}={params[key]}" + (f" (did you mean {near[0]}?)" if near else ""))
    return (f"The link's {', '.join(parts)} {'is no parameter' if len(unknown) == 1 else 'are no parameters'} of this "
            f"app and {'was' if len(unknown) == 1 else 'were'} ignored; a link takes {', '.join(known)}.")


def url_params(source: Source, state: PoolState) -> dict[str, str]:
    """The query parameters that reopen this source with these settings: the values in use
    once a page has read them (:func:`studio.state.values_in_use`: a link's budget of
    99,999 or P_rm of 5 stayed in the address after the page had used 1,797 and 0.1)."""
    out = {SOURCE_KEYS[f.name]: str(getattr(source, f.name)) for f in fields(Source) if getattr(source, f.name)}
    used = {} if state.n is None else values_in_use(settings(source, state.n), state.n)
    for name in URL_FIELDS:
        given = name in state.values or name in state.url_values or name in state.url_notes
        value = used.get(name, state.values.get(name, state.url_values.get(name))) if given else None
        if value is not None:
            out[name] = f"{value:.15g}" if isinstance(value, float) else str(value)  # 1e+06 would not read back
    return out


def write_url(source: Source) -> None:
    wanted = url_params(source, pool_state(source))
    if dict(st.query_params) != wanted:
        st.query_params.from_dict(wanted)


def restore_from_url() -> None:
    """On a session's first run: take the source and settings a URL carries. What the URL
    named that could not be opened, or settings it carries without the data source they
    belong to (no ``data=``), is kept for :func:`url_warning`. A data source that cannot be
    opened leaves the session on its start pool (:func:`studio.state.current_source`, the
    built-in digits) with that pool's own settings: the link's belong to the source it names
    (its method = kmeans and budget = 100 were applied to the digits), and the warning says so."""
    params = {key: st.query_params.get(key) for key in st.query_params}
    source, problem = source_from_url(params)
    unknown = unknown_url_keys(params)
    if unknown:
        st.session_state.link_unknown = unknown
    settings_given = ", ".join(f"{k}={params[k]}" for k in params if k in URL_FIELDS)
    if source is None and problem is None and settings_given:
        problem = (f"The link's settings ({settings_given}) were not read: "
                   f"a link's settings belong to a data source, and this link names none (no data= parameter, e.g. "
                   f"data=digits). Showing {Source().label} with its own settings; set them on the Select page, or "
                   "open the link with its data= part.")
    if problem and params.get(SOURCE_KEYS["dataset"]):  # the data source the link names cannot be opened
        shown = current_source()  # with its features named where the link's backbone was not taken
        features = f" with its {shown.backbone} features" if params.get(SOURCE_KEYS["backbone"]) else ""
        problem += f" Showing {shown.label}{features} instead" + (
            "." if "the Data page" in problem else ": choose the data source on the Data page.")  # said once
        if settings_given:  # they belong to the source not opened (a budget of 100 on another pool is another share)
            problem += (f" The link's other settings ({settings_given}) were not applied: they belong to the data "
                        "source it names.")
    if problem:
        st.session_state.link_problem = problem
    if source is None:  # none named, or the one named not opened: the start pool, with its own settings
        return
    st.session_state.source = source
    state = pool_state(source)
    state.url_values.update({k: v for k, v in params.items() if k in URL_FIELDS})
    # Checked now, on whatever page the link opens (Learn and Data read no Select value, and a
    # link's P_rm of zz, budget of abc or K of 0 went unsaid there, kept in the address; Finetune
    # reads its protocol only below a selection, which a bad K had refused); only the budget's and
    # K's upper bounds, the pool's size and the budget, wait for a page that reads the pool.
    for name, default in {**select_defaults(None), "protocol": DEFAULT_PROTOCOL}.items():
        setting(state, name, default)


def url_warning(source: Source) -> str | None:
    """The one message about the link the session was opened with: what it named that
    could not be opened, and the values of this pool's link that were not used (each named
    with its value, why, and the value used instead). It stays, through the reruns that a
    background map or a timer makes, until the user dismisses it (:func:`dismiss_url_warning`)
    or changes a setting (:func:`changed`); None when there is nothing to say."""
    pool = pool_state(source)
    notes = pool.url_notes
    parts = [f"{name} = {text!r} ({why}): using {_used_text(name, used, pool.n)} instead"
             for name, (text, used, why) in notes.items()]
    said = [st.session_state.get("link_problem")] if st.session_state.get("link_problem") else []
    if st.session_state.get("link_unknown"):
        said.append(st.session_state["link_unknown"])
    if parts:
        pages = sorted({"Finetune" if name == "protocol" else "Select" for name in notes})
        said.append("Part of this link could not be used: " + "; ".join(parts) + f". Change "
                    f"{'them' if len(parts) > 1 else 'it'} on the {' and '.join(pages)} page{'s' * (len(pages) > 1)}.")
    return " ".join(said) or None


def _used_text(name: str, used: Any, n: int | None) -> str:
    """The value used instead of a link's, in :func:`url_warning`: None is the default that
    needs the pool's size (the budget's), its number once a page has read the pool; a float
    as the range it was moved into reads (P_rm 0, not 0.0, for "0 to 0.9")."""
    if used is None:
        return DEFAULT_BUDGET_TEXT if n is None else str(select_defaults(n)[name])
    return repr(used) if isinstance(used, str) else f"{used:g}" if isinstance(used, float) else str(used)


def dismiss_url_warning(source: Source) -> None:
    """The user read :func:`url_warning`: it goes."""
    _forget_link(pool_state(source))


def _forget_link(state: PoolState) -> None:
    """What :func:`url_warning` says of the link goes (dismissed, or a setting changed)."""
    state.url_notes.clear()
    st.session_state.pop("link_problem", None)
    st.session_state.pop("link_unknown", None)


def chart_key(name: str, state: PoolState) -> str:
    """A map's widget key, one per pool, so a lasso on one pool never reads as rows of another."""
    return f"{name}_{state.key}"


def run_line(source: Source) -> str:
    """The sidebar's summary of this pool's settings and marks (empty before a page used them;
    a session opened on Inspect, Compare or Finetune shows the selection they show)."""
    pool = pool_state(source)
    if pool.n is None and "method" not in pool.values:
        return ""
    values = pool.values if pool.n is None else settings(source, pool.n)
    if pool.n is not None and budget_warning(values, pool.n):  # the budget selected, not the one typed (-5)
        budget = f"B = {budget_of(values, pool.n):,}"
    else:
        budget = (f"B = {int(values['budget']):,}" if values["budget_unit"] == "samples"
                  else f"B = {values['budget_percent']:g} % of the pool")
    k = f" · K = {values['n_cores']}" if values["method"] == "bilaf" else ""  # "auto" or the number set
    return f"**Run** {values['method']} · {budget}{k}" + (f"  \n**Marks** {pool.n_marks}" if pool.n_marks else "")
