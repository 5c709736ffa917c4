"""Inspect page: look at the images behind the map before paying for labels."""

import numpy as np
import streamlit as st

from studio import state
from studio.maps import picked_rows, selection_figure

st.title("Inspect the selection")
result = st.session_state.get("selection")
if result is None:
    st.info("Run a selection on the Select page first.")
    st.page_link("views/select.py", label="Go to Select", icon=":material/scatter_plot:")
    st.stop()
source, fs = state.current_feature_set()
thumbs = state.thumbs(source)
excluded = st.session_state.setdefault("excluded", set())
forced = st.session_state.setdefault("forced", set())
position = np.full(len(fs.ids), -1)
position[result.indices] = np.arange(result.indices.size)


def caption(i: int) -> str:
    score = result.boundary_score[position[i]] if position[i] >= 0 else np.nan
    text = f"{fs.ids[i]} · {result.role[i]}"
    return text + (f" · BS {score:.3f}" if not np.isnan(score) else "")


def gallery(indices: np.ndarray, *, limit: int = 60) -> None:
    if indices.size == 0:
        st.caption("nothing to show")
        return
    shown = indices[:limit]
    if thumbs is None:
        st.dataframe({"id": fs.ids[shown], "role": result.role[shown]}, hide_index=True)
    else:
        st.image([thumbs[i] for i in shown], caption=[caption(i) for i in shown], width=96)
    if indices.size > limit:
        st.caption(f"showing {limit} of {indices.size:,}")


tab_map, tab_cluster = st.tabs(["From the map", "One cluster, in the algorithm's order"])
with tab_map:
    a, b = st.columns(2)
    roles = a.multiselect("Roles", ["core", "boundary", "selected", "removed", "unselected"],
                          default=["core", "boundary", "selected"], key="inspect_roles")
    clusters = sorted(set(result.cluster[result.cluster >= 0].tolist()))
    cluster = b.selectbox("Cluster", ["all"] + clusters, key="inspect_cluster")
    coords = state.projection(source, st.session_state.get("projection", "umap"), start=False)
    coords = coords if coords is not None else state.projection(source, "pca")
    event = st.plotly_chart(selection_figure(coords, result, ids=fs.ids, labels=fs.labels, height=420),
                            width="stretch", key="inspect_map", on_select="rerun",
                            selection_mode=("points", "box", "lasso"))
    picked = picked_rows(event.selection.get("points", []))
    pool_rows = picked if picked.size else np.arange(len(fs.ids))
    mask = np.isin(result.role[pool_rows], roles)
    if cluster != "all":
        mask &= result.cluster[pool_rows] == cluster
    chosen = pool_rows[mask]
    order = np.argsort(np.where(position[chosen] >= 0, position[chosen], len(fs.ids) + chosen))
    chosen = chosen[order]  # selected samples first, in selection order
    st.caption(("Lasso or box on the map to narrow this down. " if not picked.size else f"{picked.size} point(s) picked on the map. ")
               + f"{chosen.size:,} sample(s) match.")
    gallery(chosen)
    with st.form("marks"):
        options = [int(i) for i in chosen[:200]]
        drop = st.multiselect("Exclude from the export", options, default=[i for i in options if i in excluded],
                              format_func=lambda i: str(fs.ids[i]), key="mark_exclude")
        add = st.multiselect("Force into the export", options, default=[i for i in options if i in forced],
                             format_func=lambda i: str(fs.ids[i]), key="mark_force")
        if st.form_submit_button("Apply marks"):
            excluded.difference_update(options)
            forced.difference_update(options)
            excluded.update(drop)
            forced.update(add)
            st.success(f"{len(excluded)} excluded, {len(forced)} forced; the Select page's exports apply them.")

with tab_cluster:
    if result.params["method"] != "bilaf":
        st.info("Per-cluster views exist for BiLAF selections (cores, boundary picks, removed noise).")
    else:
        cid = st.selectbox("Cluster", list(range(result.cores.size)), key="cluster_view",
                           format_func=lambda c: f"cluster {c} · core {fs.ids[result.cores[c]]} · "
                                                 f"budget {result.allocation[c]}")
        picks = result.indices[result.cluster[result.indices] == cid]  # selection order: core, then picks
        removed = result.removed[result.cluster[result.removed] == cid]  # denoising's order: least noisy first
        st.markdown(f"**Core and boundary picks, in the order they were picked** ({picks.size})")
        gallery(picks)
        st.markdown(f"**Removed as noise, least noisy first** ({removed.size})")
        gallery(removed)
