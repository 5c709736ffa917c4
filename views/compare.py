"""Compare page: two to four selections side by side on the same map (paper Fig. 7, live)."""

import time

import numpy as np
import pandas as pd
import streamlit as st

from bilaf_core.guidance import DIAGNOSTIC_NAMES
from studio import session, state
from studio.maps import overlay_line, pool_colouring, selection_figure

st.title("Compare selections")
source, fs = state.current_feature_set()
n = len(fs.ids)
pool = session.pool_state(source)
select_values = session.settings(source, n)  # the Select page's values: the base of every row
budget = state.budget_of(select_values, n)
EDITABLE = ("method", "n_cores", "removal_ratio", "opponent_penalty", "denoise", "seed")

st.caption(f"Budget B = {budget:,} and every parameter not in the table comes from the Select page. "
           "Edit the rows: 2 to 4 settings.")
key = session.chart_key("compare_settings", pool)
if key not in st.session_state:  # new on this run (first visit, back from a page): the last edited rows
    # the seed a float column: an integer one's editor dropped a typed "." (1.5 became 15); the page refuses 1.5
    pool.values["compare_base"] = pool.values.get("compare_rows", state.compare_rows(pd.DataFrame(
        [{**{name: select_values[name] for name in EDITABLE}, "n_cores": str(select_values["n_cores"]), "method": method}
         for method in ("bilaf", "activeft", "kmeans", "random")]).astype({"seed": float})))
settings = st.data_editor(
    pool.values["compare_base"], num_rows="dynamic", hide_index=True, key=key, placeholder=state.NO_VALUE,
    # no validate= / min_value: the table reverted a bad cell without a word; checked below
    column_config={name: state.param_column(name, budget, n) for name in EDITABLE},
)
if not state.compare_rows(settings).isna().equals(settings.isna()):
    # a row's method became a baseline: the editor starts again on the rows with its cells emptied
    pool.values["compare_base"] = pool.values["compare_rows"] = state.compare_rows(settings)
    st.rerun()
pool.values["compare_rows"] = settings
rows = settings.dropna(subset=["method"])
if len(rows) > 4:
    st.warning(f"Only the first 4 of the {len(rows)} settings are compared; delete a row to compare another one.")
rows = rows.head(4)
if len(rows) < 2:
    st.warning("Add at least two settings to compare.")
    session.halt()
cells = []  # per row, the cells applied: a cell the selection would refuse is said and left to the Select page
numbers = []  # per row, its number in the table (1, 2, ...)
for index, row in rows.iterrows():
    cells.append({column: row[column] for column in EDITABLE})
    numbers.append(settings.index.get_loc(index) + 1)
    for column, why in state.compare_problems(cells[-1], budget, n).items():
        st.warning(state.compare_not_applied(numbers[-1], row["method"], column, cells[-1][column], why,
                                             select_values[column]))
        cells[-1][column] = None
effective = state.compare_effective(select_values, cells, numbers, budget, n)
st.dataframe(effective.style.map(lambda text: "color: #8a8a8a" if str(text).startswith(state.NOT_USED) or str(
    text).endswith(state.FROM_SELECT) else ""), hide_index=True, width="stretch")
st.caption(f"What each row runs with. Grey, '{state.FROM_SELECT.strip()}': the Select page's value (the row's cell is "
           f"empty, or was not applied); it follows that page. '{state.NOT_USED}': a whole-budget method has no cores, "
           f"denoising or boundary picks; '{state.NO_STAGE2}': with K = B every label is a core, so BiLAF's stage 2 "
           "(denoising, boundary picks) does not run.")

# Rows that are the same setting (the same name: every cell that selects differently shows
# in it) are computed and drawn once, and said.
same = {}  # name -> the numbers of its rows
for number, row in zip(numbers, cells):
    same.setdefault(state.compare_setting(select_values, row, budget=budget, n=n)[1], []).append(number)
for name, of in same.items():
    if len(of) > 1:
        st.warning(f"Rows {', '.join(map(str, of[:-1]))} and {of[-1]} are the same setting ({name}): compared once.")
cells = [row for number, row in zip(numbers, cells) if number in {of[0] for of in same.values()}]
if len(cells) < 2:
    st.warning("Only one setting is left to compare: change a row's cells to compare another.")

coords, _, failure = state.map_to_draw(source, session.setting(pool, "projection", "umap"))
if failure:
    st.error(failure)
color_by = select_values["color_by"]  # as on the Select page
st.caption(f"Every map has the same axes and colours: the pool faint (by {color_by}"
           + (", a whole-budget method's in one colour" if color_by == "pseudo-class" else "")
           + "), stars BiLAF's cores and a whole-budget method's selected samples, circles BiLAF's boundary picks, "
           "crosses the removed noise; markers shrink as their number grows, hundreds of them are see-through "
           "outlines, and beyond what a small map shows a fixed subset is drawn (under each map: how many).")
# Each setting: its values, name, parameters and whether it is computed already. On a large
# pool, settings not in the cache wait for a button (each takes tens of seconds there).
runs = []  # (name, params, cached) per setting
for row in cells:
    values, name = state.compare_setting(select_values, row, budget=budget, n=n)
    params = state.selection_params(values)
    runs.append((name, params, state.selection_cached(source, budget, params)))
asked = pool.values.setdefault("compare_asked", set())  # (budget, params) the user asked Compare to compute
waiting = [name for name, params, cached in runs if not cached and (budget, params) not in asked] \
    if n > state.ON_REQUEST_ABOVE else []
if waiting:
    st.button(f"Compute {len(waiting)} setting{'s' * (len(waiting) > 1)} ({n:,} samples: tens of seconds each)",
              type="primary", on_click=asked.update,
              args=({(budget, params) for _, params, cached in runs if not cached},))
    st.caption(f"Not computed yet: {', '.join(waiting)}. On a pool of more than {state.ON_REQUEST_ABOVE:,} samples "
               "Compare computes a setting when asked; settings computed before are drawn at once.")
overall = st.empty()  # which setting of how many is being computed; each column has its own bar
# The names in a row of their own, above the maps': in a narrow window (900 px) a long name
# wrapped onto more lines than the others and pushed its map below theirs.
heads, columns = st.columns(len(cells)), st.columns(len(cells))
table = []
for number, (head, col, (name, params, cached)) in enumerate(zip(heads, columns, runs)):
    head.markdown(f"**{name}**")
    with col:
        if name in waiting:
            st.info("Not computed yet: press the button above.")
            continue
        try:
            with session.progress_bar(name) as report:
                overall.caption(f"Setting {number + 1} of {len(cells)}: {name} ...")
                started = time.perf_counter()
                result = state.selection(source, budget, params, progress=report)
                took = time.perf_counter() - started
        except ValueError as exc:
            st.error(str(exc))
            continue
        colouring = pool_colouring(result, fs.named_labels, color_by, pick_cells=False)
        fig = selection_figure(coords, result, ids=fs.ids, labels=fs.named_labels, colouring=colouring, height=320,
                               columns=len(cells), show_legend=False)
        st.plotly_chart(fig, width="stretch", key=f"compare_map_{len(table)}_{name}")
        # under the map (the maps stay level with each other): K's reason, and whether it was computed now
        k_line = (f"K = {result.params['n_cores']:,} ({result.params['n_cores_rule']}). "
                  if result.params["method"] == "bilaf" else "")
        when = "From the cache (computed before)." if cached else f"Computed in {took:.1f} s" + (
            ", stage 1 cached." if result.timings.get(state.STAGE1_CACHED) else ".")
        st.caption(f"Drawn: {overlay_line(fig)}. {k_line}{when}")
        measured = state.selection_diagnostics(source, result, normalize=True)  # one space for all settings
        table.append({"setting": name, "EMD proxy": measured["emd_proxy"], "coverage": measured["coverage"],
                      "classes covered": measured.get("classes_covered", np.nan),
                      "removed": int(result.removed.size), "computed": "before (cache)" if cached else "now",
                      "seconds": result.timings["total"]})
        advice, value = state.guide(source, result)  # the same budget for every row: the same advice
        if advice is not None and advice.diagnostic is not None:
            table[-1][DIAGNOSTIC_NAMES[advice.diagnostic][0]] = value
overall.empty()
if table:
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch", placeholder=state.NO_VALUE,
                 # the setting stays in view scrolled sideways (a narrow window); no grey meaning in this table
                 column_config={"setting": st.column_config.TextColumn(pinned=True),
                                "coverage": st.column_config.NumberColumn(format="%.3f"),
                                "EMD proxy": st.column_config.NumberColumn(format="%.4f"),
                                "seconds": st.column_config.NumberColumn(
                                    format="%.2f", help="How long the selection took when it was computed: now, or "
                                                        "before for one from the cache, which took no time now.")})
    st.caption("EMD proxy: mean distance of the pool to its nearest selected sample (lower is better). "
               "Coverage: share of the pool within the default radius of a selected sample."
               + (f" {advice.message}" if advice is not None else ""))
