"""Inspect page: look at the images behind the map before paying for labels."""

import streamlit as st

from bilaf_core.data import sample_rows, some_of
from bilaf_core.selection import ROLES
from studio import exports, gallery, session, state
from studio.maps import MARKS, in_focus, layer_role, legend_html, pool_colouring, selection_figure

st.title("Inspect the selection")
source, fs = state.current_feature_set()
n = len(fs.ids)
pool = session.pool_state(source)
try:
    with session.progress_bar("Selecting") as report:
        result = session.current_selection(source, n, progress=report)
except ValueError as exc:
    st.error(f"The Select page's parameters do not give a selection ({exc}); change them there.")
    st.page_link("views/select.py", label="Go to Select", icon=":material/scatter_plot:")
    session.halt()
st.caption(f"{source.label} · {result.params['method']} · B = {result.budget:,} (the Select page's selection)")
thumbs = state.thumbs(source)

tab_map, tab_cluster = st.tabs(["From the map", "One cluster, in the algorithm's order"])
with tab_map:
    # The roles this selection has, named as its map names them (a whole-budget method's
    # "core" picks are "selected"); those a new selection lacks (K = B: no boundary picks)
    # come back with a selection that has them. On a row of their own: at 900 px three
    # filters side by side cut the cluster ("al") and the chips of both multiselects ("e...").
    present = [role for role in ROLES if role in result.role_counts()]
    roles = session.kept(st.multiselect, "inspect_roles", "Roles", options=present, default=present, state=pool,
                         restore=True, format_func=lambda role: layer_role(result, role), wrap=True)
    b, c = st.columns([1, 2])
    clusters = ["all"] + sorted(set(result.cluster[result.cluster >= 0].tolist()))
    cluster = session.kept(b.selectbox, "inspect_cluster", "Cluster", options=clusters, default="all", state=pool)
    mark_kinds = session.kept(c.multiselect, "inspect_marks", "Mark", options=list(MARKS), default=list(MARKS),
                              state=pool, wrap=True, help="Your manual marks (below): samples excluded from or forced "
                                                           "into the export, and the unmarked rest of the pool.")
    marks = session.row_marks(pool, fs.ids)
    projection = session.setting(pool, "projection", "umap")
    coords, shown, failure = state.map_to_draw(source, projection)
    if failure:
        st.error(failure)
    color_by = session.setting(pool, "color_by", "pseudo-class")
    # the map shows the filters
    focus = dict(roles=roles, cluster=None if cluster == "all" else cluster, marks=marks, mark_kinds=mark_kinds)
    colouring = pool_colouring(result, fs.named_labels, color_by, coords=coords, **focus)
    kept = in_focus(result, **focus)  # the rows the filters keep
    picked = gallery.selectable_map(selection_figure(coords, result, ids=fs.ids, labels=fs.named_labels, colouring=colouring,
                                                     **focus),
                                    "inspect_map", pool, height=460, coords=coords, focus=kept,
                                    drawn=(result.params, shown, color_by, tuple(roles), cluster, tuple(mark_kinds),
                                           session.marks_drawn(pool)))
    st.html(legend_html(colouring))
    chosen = result.members(picked if picked.size else None)
    chosen = chosen[kept[chosen]]
    matching = f"{chosen.size:,} sample(s) match the filters; selected samples first, in selection order."
    if picked.size:  # picked here or on the Select page (drawn on both maps): a button clears it
        said, clear = st.columns([5, 1], vertical_alignment="center")
        said.caption(f"{picked.size:,} point(s) picked on the map (here or on the Select page). {matching}")
        with clear:
            gallery.clear_pick_button(pool, "inspect")
    else:
        st.caption(f"Lasso or box points on the map to narrow this down. {matching}")
    gallery.show(chosen, result, fs, thumbs, key="inspect_gallery", closer=state.closer(source, result, coords),
                 marks=pool)
    st.subheader("Marks")
    exports.marks_line(pool, fs.ids, key="clear_marks_inspect")
    ids = [str(sample) for sample in fs.ids]
    options = [int(i) for i in chosen[:200]]
    # The forced samples the filters leave out, listed by id in a text field: any sample of
    # the pool can be forced by typing its id, and one deleted from the list is no longer
    # forced. Re-listed whenever the marks or the filters change (before the field exists).
    outside = "\n".join(sorted(ids[i] for i in pool.forced.difference(options)))
    if st.session_state.get("force_ids_listed") != (pool.key, outside):
        st.session_state.force_ids_listed = (pool.key, outside)
        st.session_state.force_ids = outside
    with st.form("marks"):
        st.caption("Marks apply to this pool's exports on the Select page"
                   + (f" (the first 200 of the {chosen.size:,} matching samples are offered)" if chosen.size > 200 else "")
                   + ". To force a sample the filters leave out, type its id below.")
        drop = st.multiselect("Exclude from the export", options, default=[i for i in options if i in pool.excluded],
                              format_func=lambda i: ids[i])
        add = st.multiselect("Force into the export", options, default=[i for i in options if i in pool.forced],
                             format_func=lambda i: ids[i])
        typed = st.text_area("Force into the export, by id (any sample of the pool)", key="force_ids", height=80,
                             placeholder=f"e.g. {ids[-1]}",
                             help=f"One id per line or separated by commas; this pool's {len(ids):,} ids run from "
                                  f"{ids[0]} to {ids[-1]}. Lists the forced samples the filters above leave out: "
                                  "delete an id to stop forcing it.")
        if st.form_submit_button("Apply marks"):
            try:
                by_id = sample_rows(fs.ids, exports.typed_ids(typed))
            except ValueError as exc:
                st.error(f"Marks not applied: {exc}.")
            else:
                pool.excluded.difference_update(options)
                forced = set(add) | set(by_id.tolist())  # the typed list replaces the forced samples outside the filters
                both = set(drop) & forced
                pool.excluded.update(drop)
                pool.forced.clear()
                pool.forced.update(forced - both)  # a sample in both lists is excluded
                session.save_marks(pool, fs.ids)
                if both:
                    st.session_state.marks_conflict = sorted(ids[i] for i in both)
                st.rerun()
    conflict = st.session_state.pop("marks_conflict", None)
    if conflict:
        st.warning(f"{len(conflict):,} sample{'s were' if len(conflict) > 1 else ' was'} marked both to exclude and "
                   f"to force, and {'are' if len(conflict) > 1 else 'is'} excluded (a sample is one or the other): "
                   f"{some_of(conflict)}.")

with tab_cluster:
    if result.params["method"] != "bilaf":
        st.info("Per-cluster views exist for BiLAF selections (cores, boundary picks, removed noise).")
    else:
        # No count of your marks in the cluster's name: the browser kept showing the name the
        # box had before you marked (the same option chosen), so the captions below say them.
        cid = session.kept(st.selectbox, "cluster_view", "Cluster", options=list(range(result.cores.size)), default=0,
                           state=pool, format_func=lambda c: f"cluster {c} · core {fs.ids[result.cores[c]]} · "
                                                             f"budget {result.allocation[c]}")
        picks, removed = result.cluster_view(cid)
        st.markdown(f"**Core and boundary picks, in the order they were picked** ({picks.size})")
        gallery.show(picks, result, fs, thumbs, key="cluster_picks", marks=pool)  # captions with the marks, as above
        st.markdown(f"**Removed as noise, least noisy first** ({removed.size})")
        gallery.show(removed, result, fs, thumbs, key="cluster_removed", marks=pool)
