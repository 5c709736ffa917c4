"""Select page: BiLAF's parameters, the selection on a 2-D map, diagnostics, exports."""

import pandas as pd
import streamlit as st

from bilaf_core import METHODS, default_n_cores
from bilaf_core.boundary import CRITERIA, DENOISERS, PROCESSES, VARIANTS
from bilaf_core.core import CORE_METHODS
from bilaf_core.export import selection_table, to_csv, to_json, to_label_studio
from studio import state
from studio.maps import selection_figure

source, fs = state.current_feature_set()
n = len(fs.ids)
st.title("Select samples to label")

with st.form("selection_parameters"):
    left, mid, right = st.columns(3)
    method = left.selectbox("Method", METHODS, key="method", help="BiLAF, or a baseline selecting the whole budget")
    unit = mid.radio("Budget in", ["samples", "% of the pool"], horizontal=True, key="budget_unit")
    if unit == "samples":
        budget = int(right.number_input("Budget B", 1, n, value=min(n, max(10, n // 20)), key="budget"))
    else:
        percent = right.number_input("Budget (% of the pool)", 0.01, 100.0, value=5.0, step=0.5, key="budget_percent")
        budget = max(1, min(n, round(n * percent / 100)))
    if n > 1:
        n_cores = left.slider("K: core samples (stage 1)", 1, min(n, 1000), value=min(1000, default_n_cores(n, n)),
                              key="n_cores", help="pseudo-class centres; must not exceed the budget")
    else:  # a slider needs two values
        n_cores = 1
        left.caption("K = 1: the pool has a single sample")
    removal_ratio = mid.slider("P_rm: removal ratio", 0.0, 0.9, 0.1, 0.05, key="removal_ratio")
    include_ratio = right.slider("P_in: include ratio per IDC round", 0.05, 1.0, 0.1, 0.05, key="include_ratio")
    k_neighbors = left.slider("k: density neighbours", 1, 50, 10, key="k_neighbors")
    penalty = mid.slider("delta: opponent penalty (1 = off)", 1.0, 2.0, 1.1, 0.05, key="opponent_penalty")
    with st.expander("Advanced"):
        a, b, c = st.columns(3)
        core_method = a.selectbox("Stage-1 core method", CORE_METHODS, key="core_method")
        variant = b.selectbox("Variant", VARIANTS, key="variant", help="paper: defects fixed; reference: the authors' code")
        denoise = c.selectbox("Denoiser", DENOISERS, key="denoise")
        criterion = a.selectbox("Criterion", CRITERIA, key="criterion")
        process = b.selectbox("Process", PROCESSES, key="process")
        seed = int(c.number_input("Seed", 0, 2**31 - 1, 0, key="seed"))
    st.form_submit_button("Select", type="primary")

params = (("method", method), ("n_cores", int(n_cores)), ("core_method", core_method), ("variant", variant),
          ("k_neighbors", int(k_neighbors)), ("include_ratio", float(include_ratio)),
          ("removal_ratio", float(removal_ratio)), ("opponent_penalty", float(penalty)), ("denoise", denoise),
          ("criterion", criterion), ("process", process), ("random_state", seed))
try:
    result = state.selection(source, budget, params)
except ValueError as exc:
    st.session_state.pop("selection", None)
    st.error(f"Cannot select: {exc}")
    st.stop()
st.session_state.selection = result

counts = result.role_counts()
metrics = {"Selected": result.budget, "Core": counts.get("core", 0), "Boundary": counts.get("boundary", 0),
           "Removed": counts.get("removed", 0), "Unselected": counts.get("unselected", 0)}
for col, (name, value) in zip(st.columns(5), metrics.items()):
    col.metric(name, f"{value:,}")

map_col, info_col = st.columns([3, 2])
with map_col:
    a, b = st.columns(2)
    projection = a.radio("Map", ["umap", "tsne", "pca"], horizontal=True, key="projection",
                         format_func={"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}.get)
    color_by = b.radio("Colour pool by", ["pseudo-class", "true label"], horizontal=True, key="color_by")
    on_request = n > state.AUTO_PROJECTION_MAX and projection != "pca"
    start = not on_request or st.session_state.get(f"project_{projection}", False)
    try:
        coords = state.projection(source, projection, seed=0, start=start)
    except Exception as exc:  # a failed background projection: say so, fall back to PCA
        st.error(f"The {projection} map failed ({exc}); showing PCA")
        coords = None
    shown = projection if coords is not None else "pca"
    if coords is None:
        coords = state.projection(source, "pca")
        if on_request and not start:
            st.button(f"Compute the {projection.upper()} map ({n:,} points, takes a while)",
                      on_click=lambda: st.session_state.update({f"project_{projection}": True}))
        else:
            @st.fragment(run_every="2s")
            def wait_for_map():
                st.info(f"Computing the {projection.upper()} map in the background; PCA meanwhile.")
                if state.projection(source, projection, seed=0, start=False) is not None:
                    st.rerun()

            wait_for_map()
    fig = selection_figure(coords, result, ids=fs.ids, labels=fs.labels, color_by=color_by)
    st.plotly_chart(fig, width="stretch", key="map")
    st.caption(f"2-D {shown.upper()} of the features (seed 0). Stars: cores; circles: boundary picks; "
               "crosses: removed noise. Click a legend entry to hide a layer.")
with info_col:
    report = state.selection_diagnostics(source, result, normalize=result.params["normalize"])
    estimate = f", on {report['estimated_on']:,} random pool samples" if report["estimated_on"] < n else ""
    lines = [f"**EMD proxy** {report['emd_proxy']:.4f} (ActiveFT Eq. 16; lower is better{estimate})",
             f"**Coverage** {report['coverage']:.1%} of the pool within r = {report['coverage_radius']:.3f}",
             f"**Time** stage 1 {result.timings['stage1']:.2f} s · stage 2 {result.timings['stage2']:.2f} s"]
    if "classes_covered" in report:
        lines.insert(0, f"**Classes covered** {report['classes_covered']} / {report['n_classes']}")
    st.markdown("  \n".join(lines))
    if "per_class" in report:
        st.caption("Selected per class")
        st.bar_chart(pd.Series(report["per_class"], name="selected"), height=180)
    if result.allocation.size and result.params["method"] == "bilaf":
        st.caption("Per-cluster budgets (after denoising)")
        st.bar_chart(pd.Series(result.allocation, name="budget"), height=180)

table = selection_table(result, fs.ids, fs.labels, excluded=st.session_state.get("excluded", set()),
                        forced=st.session_state.get("forced", set()))
st.subheader(f"Export ({len(table):,} samples)")
marks = len(st.session_state.get("excluded", ())) + len(st.session_state.get("forced", ()))
if marks:
    st.caption(f"{marks} manual mark(s) from the Inspect page applied.")
c1, c2, c3 = st.columns(3)
stem = f"{source.dataset}_{result.params['method']}_{len(table)}"
# Files are written when a button is pressed, not on every slider move.
c1.download_button("CSV", lambda: to_csv(table), file_name=f"{stem}.csv", mime="text/csv", key="export_csv")
c2.download_button("JSON", lambda: to_json(table, result.params), file_name=f"{stem}.json", mime="application/json",
                   key="export_json")
if source.dataset == "folder":
    c3.download_button("Label Studio tasks", lambda: to_label_studio(table, image_root=source.root),
                       file_name=f"{stem}_label_studio.json", mime="application/json", key="export_ls")
# The table is sent only while its expander is open (it has thousands of rows at CIFAR scale).
selected_samples = st.expander("Selected samples", key="show_selected", on_change="rerun")
if selected_samples.open:
    selected_samples.dataframe(table, hide_index=True, width="stretch")
