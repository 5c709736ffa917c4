"""Compare page: two to four selections side by side on the same map (paper Fig. 7, live)."""

import numpy as np
import pandas as pd
import streamlit as st

from bilaf_core import METHODS
from studio import state
from studio.maps import selection_figure

st.title("Compare selections")
source, fs = state.current_feature_set()
n = len(fs.ids)
current = st.session_state.get("selection")
budget = current.budget if current is not None else min(n, max(10, n // 20))
n_cores = current.params["n_cores"] if current is not None and current.params.get("n_cores") else max(1, budget // 5)

st.caption(f"Budget B = {budget:,} (from the Select page). Edit the rows: 2 to 4 settings.")
default = pd.DataFrame({
    "method": ["bilaf", "activeft", "kmeans", "random"],
    "n_cores": [n_cores] * 4, "removal_ratio": [0.1] * 4, "opponent_penalty": [1.1] * 4,
    "denoise": ["idc"] * 4, "seed": [0] * 4,
})
settings = st.data_editor(
    default, num_rows="dynamic", hide_index=True, key="compare_settings",
    column_config={"method": st.column_config.SelectboxColumn(options=list(METHODS), required=True),
                   "denoise": st.column_config.SelectboxColumn(options=["idc", "density", "distance", "none"]),
                   "n_cores": st.column_config.NumberColumn(min_value=1, step=1),
                   "removal_ratio": st.column_config.NumberColumn(min_value=0.0, max_value=0.9, step=0.05),
                   "opponent_penalty": st.column_config.NumberColumn(min_value=1.0, max_value=3.0, step=0.05),
                   "seed": st.column_config.NumberColumn(min_value=0, step=1)},
)
rows = settings.dropna(subset=["method"]).head(4)
if len(rows) < 2:
    st.warning("Add at least two settings to compare.")
    st.stop()

coords = state.projection(source, st.session_state.get("projection", "umap"), start=False)
coords = coords if coords is not None else state.projection(source, "pca")
columns = st.columns(len(rows))
table = []
for col, (_, row) in zip(columns, rows.iterrows()):
    name = f"{row.method}" + (f" K={int(row.n_cores)} Prm={row.removal_ratio:g} δ={row.opponent_penalty:g}"
                              if row.method == "bilaf" else "")
    params = (("method", row.method), ("n_cores", int(row.n_cores)), ("core_method", "activeft"), ("variant", "paper"),
              ("k_neighbors", 10), ("include_ratio", 0.1), ("removal_ratio", float(row.removal_ratio)),
              ("opponent_penalty", float(row.opponent_penalty)), ("denoise", row.denoise or "idc"),
              ("criterion", "boundary_score"), ("process", "iterative"), ("random_state", int(row.seed)))
    with col:
        st.markdown(f"**{name}**")
        try:
            result = state.selection(source, budget, params)
        except ValueError as exc:
            st.error(str(exc))
            continue
        st.plotly_chart(selection_figure(coords, result, ids=fs.ids, labels=fs.labels, height=320, show_legend=False),
                        width="stretch", key=f"compare_map_{len(table)}_{name}")
        report = state.selection_diagnostics(source, result, normalize=True)  # one space for all settings
        table.append({"setting": name, "EMD proxy": report["emd_proxy"], "coverage": report["coverage"],
                      "classes covered": report.get("classes_covered", np.nan),
                      "removed": int(result.removed.size), "seconds": result.timings["total"]})
if table:
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch",
                 column_config={"coverage": st.column_config.NumberColumn(format="%.3f"),
                                "EMD proxy": st.column_config.NumberColumn(format="%.4f"),
                                "seconds": st.column_config.NumberColumn(format="%.2f")})
    st.caption("EMD proxy: mean distance of the pool to its nearest selected sample (lower is better). "
               "Coverage: share of the pool within the default radius of a selected sample.")
