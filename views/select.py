"""Select page: BiLAF's parameters, the selection on a 2-D map, diagnostics, export."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from bilaf_core import METHODS, default_n_cores, diagnostics
from bilaf_core.boundary import CRITERIA, DENOISERS, PROCESSES, VARIANTS
from bilaf_core.core import CORE_METHODS
from studio import state

dataset, backbone = st.session_state.dataset, st.session_state.backbone
pool = state.pool(dataset)
n = len(pool)
st.title("Select samples to label")

with st.form("selection_parameters"):
    left, right = st.columns(2)
    method = left.selectbox("Method", METHODS, key="method", help="BiLAF, or a baseline selecting the whole budget")
    budget = right.number_input("Budget B (samples to label)", 1, n, value=min(n, 90), key="budget")
    n_cores = left.slider("K: core samples (stage 1)", 1, min(n, 500), value=min(default_n_cores(n, 90) * 2, n), key="n_cores")
    removal_ratio = right.slider("P_rm: removal ratio", 0.0, 0.9, 0.1, 0.05, key="removal_ratio")
    include_ratio = left.slider("P_in: include ratio per IDC round", 0.05, 1.0, 0.1, 0.05, key="include_ratio")
    k_neighbors = right.slider("k: density neighbours", 1, 50, 10, key="k_neighbors")
    penalty = left.slider("delta: opponent penalty (1 = off)", 1.0, 2.0, 1.1, 0.05, key="opponent_penalty")
    with st.expander("Advanced"):
        a, b = st.columns(2)
        core_method = a.selectbox("Stage-1 core method", CORE_METHODS, key="core_method")
        variant = b.selectbox("Variant", VARIANTS, key="variant", help="paper: defects fixed; reference: the authors' code")
        denoise = a.selectbox("Denoiser", DENOISERS, key="denoise")
        criterion = b.selectbox("Criterion", CRITERIA, key="criterion")
        process = a.selectbox("Process", PROCESSES, key="process")
        seed = b.number_input("Seed", 0, 2**31 - 1, 0, key="seed")
    st.form_submit_button("Select", type="primary")

params = (("method", method), ("n_cores", int(n_cores)), ("core_method", core_method), ("variant", variant),
          ("k_neighbors", int(k_neighbors)), ("include_ratio", float(include_ratio)),
          ("removal_ratio", float(removal_ratio)), ("opponent_penalty", float(penalty)), ("denoise", denoise),
          ("criterion", criterion), ("process", process), ("random_state", int(seed)))
try:
    result = state.selection(dataset, backbone, int(budget), params)
except ValueError as exc:
    st.session_state.pop("selection", None)
    st.error(f"Cannot select: {exc}")
    st.stop()
st.session_state.selection = result

features = state.features(dataset, backbone)
coords = state.projection(dataset, backbone)
counts = result.role_counts()
cols = st.columns(4)
for col, role in zip(cols, ("core", "boundary", "removed", "unselected")):
    col.metric(role.capitalize(), f"{counts.get(role, 0) + (counts.get('selected', 0) if role == 'boundary' else 0):,}")

map_col, info_col = st.columns([3, 2])
with map_col:
    color_by = st.radio("Colour pool by", ["pseudo-class", "true label"], horizontal=True, key="color_by")
    colour = result.cluster if color_by == "pseudo-class" and (result.cluster >= 0).any() else pool.labels
    fig = go.Figure()
    fig.add_trace(go.Scattergl(x=coords[:, 0], y=coords[:, 1], mode="markers", name="pool",
                               marker=dict(size=4, color=colour, colorscale="Turbo", opacity=0.25),
                               text=pool.ids, hoverinfo="text"))
    layers = (("removed", "x", 7, "#555"), ("boundary", "circle-open", 9, "#d62728"),
              ("selected", "circle-open", 9, "#d62728"), ("core", "star", 13, "#111"))
    for role, symbol, size, col in layers:
        idx = np.flatnonzero(result.role == role)
        if idx.size:
            fig.add_trace(go.Scattergl(x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=role,
                                       marker=dict(symbol=symbol, size=size, color=col),
                                       text=[f"{pool.ids[i]} · label {pool.labels[i]} · cluster {result.cluster[i]}" for i in idx],
                                       hoverinfo="text"))
    fig.update_layout(height=560, margin=dict(l=0, r=0, t=10, b=0), legend=dict(orientation="h"))
    st.plotly_chart(fig, use_container_width=True, key="map")
    st.caption("2-D PCA of the features. Stars: cores; circles: boundary picks; crosses: removed noise.")
with info_col:
    report = diagnostics(features if not result.params["normalize"] else features / np.linalg.norm(features, axis=1, keepdims=True),
                         result.indices, cluster=result.cluster, labels=pool.labels)
    st.markdown(f"**Classes covered** {report['classes_covered']} / {report['n_classes']}  \n"
                f"**EMD proxy** {report['emd_proxy']:.4f} (lower is better)  \n"
                f"**Coverage** {report['coverage']:.1%} within r = {report['coverage_radius']:.3f}  \n"
                f"**Time** {result.timings['total']:.2f} s")
    st.bar_chart(pd.Series(report["per_class"], name="selected per class"))

order = result.indices
position = np.full(n, -1)
position[order] = np.arange(order.size)
export = pd.DataFrame({
    "id": pool.ids[order], "order": np.arange(order.size), "role": result.role[order],
    "cluster": result.cluster[order], "boundary_score": result.boundary_score, "label": pool.labels[order],
})
st.download_button("Download selection (CSV)", export.to_csv(index=False), file_name=f"{dataset}_selection.csv",
                   mime="text/csv", key="export_csv")
with st.expander("Selected samples"):
    st.dataframe(export, hide_index=True, use_container_width=True)
