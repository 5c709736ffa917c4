"""Select page: BiLAF's parameters, the selection on a 2-D map, diagnostics, exports."""

import time

import pandas as pd
import streamlit as st

from bilaf_core.auto import AUTO
from bilaf_core.guidance import DIAGNOSTIC_NAMES, pool_share
from studio import exports, gallery, session, state
from studio.maps import (MAP_NAMES, ProgressFile, draws_density, legend_html, pool_colouring, progress_line,
                         selection_figure)

source, fs = state.current_feature_set()
n = len(fs.ids)
pool = session.pool_state(source)
default = state.select_defaults(n)
st.title("Select samples to label")


def keep(widget, name, label=None, **kwargs):
    """A widget whose value the pool keeps; a selection parameter's label, help and range
    come with ``**state.param_widget(name)``."""
    if label is not None:
        kwargs["label"] = label
    return session.kept(widget, name, default=default[name], state=pool, **kwargs)


def switch_budget_unit() -> None:
    """Keep the budget when its unit changes: the other input starts at the same number of samples."""
    budget = state.budget_of({**session.settings(source, n), "budget_unit": "% of the pool"
                              if st.session_state.budget_unit == "samples" else "samples"}, n)
    pool.values.update(budget=budget, budget_percent=round(100 * budget / n, 2))
    for key in ("budget", "budget_percent"):
        st.session_state.pop(key, None)  # re-seeded from the pool's values below


# Outside the form: switching the unit shows the other input at once, holding the same budget.
unit = keep(st.radio, "budget_unit", "Budget in", options=list(state.PAGE_OPTIONS["budget_unit"]), horizontal=True,
            on_change=switch_budget_unit)
empty = []  # the number fields left empty, or holding text that is no number (a browser sends both as no value)
with st.form("selection_parameters"):
    left, mid, right = st.columns([1, 1.5, 1])  # the budget field needs room for 6 digits beside its buttons at 900 px
    keep(left.selectbox, "method", **state.param_widget("method"))
    # No bounds: a number outside the pool is clamped below, with a warning about that number
    # (an input with a min_value kept its last valid number, which the warning then quoted;
    # in a browser it only turns red, its range in a tooltip). A float input: an int one
    # made 12.5 into 12 without a word; the warning below says "not a whole number".
    # value=None: an emptied field gives None (not 0, which then selected 1), and the pool
    # keeps its last value, which the warning below names.
    if unit == "samples":
        if keep(mid.number_input, "budget", "Budget B", step=1.0, format="%.10g", value=None) is None:
            empty.append("budget")
    elif keep(mid.number_input, "budget_percent", "Budget (% of the pool)", step=0.5, value=None) is None:
        empty.append("budget_percent")
    # K's slider ends at the budget just given (and the pool's size): a K kept from before
    # above a new, smaller B is moved down to B, and the page says so (it was an error-only page).
    budget_now = state.budget_of(session.settings(source, n), n)
    k_asked = session.pending(pool, "n_cores", default["n_cores"])
    k_used, k_held, k_note = state.n_cores_to_use(k_asked, budget_now, n, pool.held.get("n_cores"))
    pool.held.pop("n_cores", None)
    if k_held:  # moved down for this budget: it comes back when the budget allows it
        pool.held["n_cores"] = k_held
    if k_used != k_asked:
        session.put(pool, "n_cores", k_used)
    keep(right.select_slider, "n_cores", options=[AUTO, *range(1, state.n_cores_max(budget_now, n) + 1)],
         **state.param_widget("n_cores"))
    if k_note:  # said until the next change of a setting (a rerun for the background map keeps it)
        pool.notes["n_cores"] = k_note
    keep(left.slider, "removal_ratio", **state.param_widget("removal_ratio"))
    keep(mid.slider, "include_ratio", **state.param_widget("include_ratio"))
    keep(right.slider, "k_neighbors", **state.param_widget("k_neighbors"))
    keep(left.slider, "opponent_penalty", **state.param_widget("opponent_penalty"))
    with st.expander("Advanced"):
        a, b, c = st.columns(3)
        keep(a.selectbox, "core_method", **state.param_widget("core_method"))
        keep(b.selectbox, "variant", **state.param_widget("variant"))
        keep(c.selectbox, "denoise", **state.param_widget("denoise"))
        keep(a.selectbox, "criterion", **state.param_widget("criterion"))
        keep(b.selectbox, "process", **state.param_widget("process"))
        # no bounds, and a float input, as the budget: an int one made 1.5 into 1 without a word
        if keep(c.number_input, "seed", "Seed", step=1.0, format="%.10g", value=None) is None:
            empty.append("seed")
    st.form_submit_button("Select", type="primary")
    # The form's edits reach the selection (and are kept) only when Select is pressed; a
    # newcomer lost edits by leaving the page. Kept as a form: each slider moved on its own
    # would rerun the selection (a stage 1 per K moved through).
    st.caption("Changes here apply when you press **Select**; leaving the page before that drops them."
               + ("" if session.setting(pool, "method", "bilaf") == "bilaf" else
                  " K, P_rm, P_in, k, delta and the Advanced settings but the seed are BiLAF's: the method selected "
                  "now spends the whole budget in one stage and does not use them."))

values = session.settings(source, n)
for name in empty:
    st.warning(state.empty_input_warning(name, values))
for moved in (state.budget_warning(values, n), state.seed_warning(values["seed"]), *pool.notes.values()):
    if moved is not None:
        st.warning(moved)
try:
    with session.progress_bar("Selecting") as report:
        result = session.current_selection(source, n, progress=report)
except ValueError as exc:
    st.error(f"Cannot select: {exc}")
    session.halt()

if result.params["method"] == "bilaf" and result.cores.size == 1 < result.budget:  # with B = 1, K cannot be raised
    st.warning("K = 1: a single core has no opponent, so the boundary score only ranks how far a sample lies from "
               "its core. Raise K (the number of classes, if you know it, is a good start).")
metrics = st.container(horizontal=True, gap="medium")  # they wrap onto a second row in a narrow window
for name, value in state.selection_counts(result).items():
    metrics.metric(name, f"{value:,}", width="content")
k_line = (f" K = {result.params['n_cores']:,} ({result.params['n_cores_rule']})."
          if result.params["method"] == "bilaf" else "")
if result.params["method"] == "bilaf" and not result.has_stage2:
    k_line += (" With K = B every label is a core: stage 2 (denoising, boundary picks) did not run, so P_rm, P_in, "
               "k and delta have no effect.")
st.caption(f"B = {result.budget:,} sample{'s' if result.budget != 1 else ''}, {pool_share(result.budget / n)} of the {n:,}-sample "
           f"pool.{k_line}")

with st.container():  # the map takes the page's width; the diagnostics go under it
    a, b = st.columns(2)
    projection = keep(a.radio, "projection", "Map", options=list(state.PAGE_OPTIONS["projection"]), horizontal=True,
                      format_func=MAP_NAMES.get)
    color_by = keep(b.radio, "color_by", "Colour pool by", horizontal=True,
                    options=list(state.PAGE_OPTIONS["color_by"][:1 if fs.labels is None else None]),
                    help="pseudo-class: the core each sample is assigned to; true label: the pool's labels")
    on_request = n > state.ON_REQUEST_ABOVE and projection != "pca"
    start = not on_request or st.session_state.get(f"project_{projection}", False)
    coords, shown, failure = state.map_to_draw(source, projection, seed=0, start=start)
    if failure:
        st.error(failure)
    elif shown != projection:
        if on_request and not start:
            st.button(f"Compute the {MAP_NAMES[projection]} map ({n:,} points, takes a while)",
                      on_click=lambda: st.session_state.update({f"project_{projection}": True}))
            st.caption(f"Until then the map below is PCA: the {MAP_NAMES[projection]} map of more than "
                       f"{state.ON_REQUEST_ABOVE:,} points is computed on request.")
        else:
            @st.fragment(run_every="2s")
            def wait_for_map():
                st.info(f"Computing the {MAP_NAMES[projection]} map in the background; PCA meanwhile.")
                done = ProgressFile.for_job((source, projection, 0)).read()
                if done is not None:
                    fraction, text = progress_line(MAP_NAMES[projection], done, time.time())
                    st.progress(fraction, text=text)
                _, now_shown, failed = state.map_to_draw(source, projection, seed=0)
                if now_shown == projection or failed:  # done or failed: the page's rerun draws it or says why
                    st.rerun()

            wait_for_map()
    colouring = pool_colouring(result, fs.named_labels, color_by, coords=coords)
    marks = session.row_marks(pool, fs.ids)  # drawn as rings: the marks made on Inspect
    picked = gallery.selectable_map(selection_figure(coords, result, ids=fs.ids, labels=fs.named_labels, marks=marks,
                                                     colouring=colouring),
                                    "select_map", pool, drawn=(result.params, shown, color_by, session.marks_drawn(pool)),
                                    coords=coords)
    st.html(legend_html(colouring))
    density = f" The pool ({n:,}) is drawn as a density: darker where more samples lie." if draws_density(n) else ""
    layers = ("Stars: cores; circles: boundary picks; crosses: removed noise." if result.has_stage2
              else "Stars: the cores (K = B: every label a core)." if result.params["method"] == "bilaf"
              else f"Stars: the samples {result.params['method']} selected (a whole-budget method: no cores, "
                   "boundaries or noise).")
    rings = " Rings: your marks (⊗ excluded from, ⊕ forced into the export; set on Inspect)." if pool.n_marks else ""
    st.caption(f"2-D {MAP_NAMES[shown]} of the features (seed 0). {layers}{rings}{density} Click a legend entry to "
               "hide a layer; lasso or box points to see them below.")
text_col, class_col, cluster_col = st.columns(3)
report = state.selection_diagnostics(source, result, normalize=result.params["normalize"])
with text_col:
    estimate = f", on {report['estimated_on']:,} random pool samples" if report["estimated_on"] < n else ""
    lines = [f"**EMD proxy** {report['emd_proxy']:.4f} (ActiveFT Eq. 16; lower is better{estimate})",
             f"**Coverage** {report['coverage']:.1%} of the pool within r = {report['coverage_radius']:.3f}",
             f"**Time** {state.time_text(result)}"]
    if "classes_covered" in report:
        lines.insert(0, f"**Classes covered** {report['classes_covered']} / {report['n_classes']}")
    advice, value = state.guide(source, result)
    if advice is not None and advice.diagnostic is not None:
        name = DIAGNOSTIC_NAMES[advice.diagnostic][0]
        lines.insert(0, f"**{name[0].upper() + name[1:]}** {value:.4f} "
                        "(the best label-free guide at this budget)")
    st.markdown("  \n".join(lines))
    if advice is not None:
        st.caption(advice.message)
if "per_class" in report:
    with class_col:
        st.caption("Selected per class")
        st.bar_chart(pd.Series(report["per_class"], name="selected"), height=180)  # every class, zeros too
if result.has_stage2:  # at K = B every cluster's budget is its core: nothing to chart
    with cluster_col:
        st.caption("Per-cluster budgets (after denoising)")
        st.bar_chart(pd.Series(result.allocation, name="budget"), height=180)

if picked.size:
    heading, clear = st.columns([5, 1], vertical_alignment="bottom")
    heading.subheader(f"Picked on the map ({picked.size:,})")
    with clear:
        gallery.clear_pick_button(pool, "select")
    gallery.show(result.members(picked), result, fs, state.thumbs(source), key="select_picked",  # as on Inspect
                 closer=state.closer(source, result, coords), marks=pool)

exports.section(source, fs, result, pool)
