"""Finetune page: train on the current selection in the background and compare runs."""

import pandas as pd
import plotly.express as px
import streamlit as st

from bilaf_core.data import read_label_csv
from bilaf_core.features import BUNDLED_BACKBONE
from bilaf_core.finetune import FinetuneConfig
from studio import jobs, state

st.title("Finetune and compare")
store = state.run_store()
source, fs = state.current_feature_set()
result = st.session_state.get("selection")

if result is None:
    st.info("Run a selection on the Select page first; its accuracy is measured here.")
    st.page_link("views/select.py", label="Go to Select", icon=":material/scatter_plot:")
else:
    st.markdown(f"**Selection** {result.params['method']} · B = {result.budget:,} of {len(fs.ids):,} · "
                f"{source.label}")
    protocol = st.radio("Protocol", list(jobs.PROTOCOL_NAMES), format_func=jobs.PROTOCOL_NAMES.get, horizontal=True,
                        key="protocol", help="Linear probe and k-NN train on frozen features in seconds; full "
                        "finetuning trains the backbone (slow on a CPU).")
    selected_labels = None
    if fs.labels is None:
        st.warning("This pool has no labels. Upload a CSV with `id,label` for the selected samples (e.g. the "
                   "annotations of the exported selection); accuracy is measured on the labelled test folder given "
                   "on the Data page.")
        upload = st.file_uploader("Labels CSV", type=["csv"], key="labels_csv")
        if upload is not None:
            try:
                test = None if source.feature_file else state.pool(source.dataset, source.root, source.test_root).test
                selected_labels = read_label_csv(upload, fs.ids[result.indices],
                                                 class_names=test.class_names if test is not None else ())[0]
            except ValueError as exc:
                st.error(f"{exc}")
    options, ready = {}, fs.labels is not None or selected_labels is not None
    with st.form("training_options"):
        if protocol == "knn":
            options["k"] = st.slider("k neighbours", 1, 100, 20)
        elif protocol == "linear":
            options["c"] = st.select_slider("C (inverse regularisation)", [0.1, 1.0, 10.0, 100.0, 1000.0], value=10.0)
        else:
            if source.feature_file:
                st.error("Full finetuning needs the images; this source is a feature file. Use linear probe or k-NN, "
                         "or load the image pool on the Data page.")
                ready = False
            default = FinetuneConfig()
            a, b, c = st.columns(3)
            backbone = source.backbone if source.backbone not in ("", "pixels") else BUNDLED_BACKBONE
            options["backbone"] = a.text_input("Backbone (timm)", backbone)
            options["weights"] = b.text_input("Weights file (optional)", source.weights).strip() or None
            options["epochs"] = c.number_input("Epochs", 1, 1000, 10, key="ft_epochs")
            options["image_size"] = a.select_slider("Image size", [32, 64, 96, 128, 160, 224], value=default.image_size, key="ft_image_size")
            options["batch_size"] = b.number_input("Batch size", 1, 512, default.batch_size, key="ft_batch_size")
            options["eval_every"] = c.number_input("Evaluate every N epochs", 1, 100, default.eval_every, key="ft_eval_every")
            options["eval_limit"] = a.number_input("Evaluate on at most", 10, 100_000, default.eval_limit, key="ft_eval_limit")
            options["random_state"] = b.number_input("Seed", 0, 2**31 - 1, 0, key="ft_seed")
            st.caption(f"SGD momentum {default.momentum}, weight decay {default.weight_decay}, lr {default.lr} with "
                       f"{default.warmup_epochs} warm-up epochs and cosine decay, label smoothing "
                       f"{default.label_smoothing}; the best top-1 seen is reported (the papers' protocol). "
                       "A checkpoint is kept per epoch: the same run launched again resumes.")
        launch = st.form_submit_button("Launch", type="primary", disabled=not ready or store is None)
    job = jobs.get(st.session_state.get("job_id"))
    if launch and (job is None or job.done):
        data = jobs.TrainingInput(source, state.features(source), fs.labels, fs.ids, fs.kept, fs.backbone,
                                  fs.test_features, fs.test_labels)
        job = jobs.submit(store.path, data, result, protocol, options, selected_labels=selected_labels)
        st.session_state.job_id = job.id
    elif launch:
        st.warning("A run of this session is still going; wait for it or cancel it.")

    @st.fragment(run_every=1.0)
    def show_job():
        current = jobs.get(st.session_state.get("job_id"))
        if current is None:
            return
        title = f"{jobs.PROTOCOL_NAMES[current.protocol]} · {current.method} · B = {current.budget:,}"
        if not current.done:
            st.progress(min(1.0, current.progress), text=f"{title}: {current.message}")
            st.button("Cancel", on_click=current.cancel.set, key=f"cancel_{current.id}")
            return
        error = current.future.exception()
        if error is not None:
            cancelled = type(error).__name__.endswith("Cancelled")
            (st.warning if cancelled else st.error)(f"{title}: {'cancelled' if cancelled else 'failed'}: {error}")
            return
        outcome = current.future.result()
        if current.protocol == "finetune":
            st.success(f"{title}: best top-1 **{outcome.best_top1:.1%}** (epoch {outcome.best_epoch}), final "
                       f"{outcome.final_top1:.1%}, on {outcome.n_eval:,} samples of the {outcome.eval_split}")
            history = pd.DataFrame(outcome.history)
            st.line_chart(history.set_index("epoch")[["loss", "top1"]], height=220)
        else:
            st.success(f"{title}: top-1 **{outcome.top1:.1%}** on {outcome.n_eval:,} samples of the "
                       f"{outcome.eval_split}; {outcome.classes_seen} of {outcome.n_classes} classes in the selection")
        if st.session_state.get("shown_job") != current.id:  # refresh the history once the run lands
            st.session_state.shown_job = current.id
            st.rerun()

    show_job()

st.subheader("Run history")
if store is not None:
    runs = pd.DataFrame(store.runs())
    if runs.empty:
        st.caption(f"No runs yet in {store.path}.")
    else:
        runs["top-1"] = [m.get("top1") if isinstance(m, dict) else None for m in runs["metrics"]]
        runs["started"] = pd.to_datetime(runs["started"], unit="s").dt.strftime("%Y-%m-%d %H:%M")
        datasets = sorted(runs["dataset"].dropna().unique())
        chosen = st.selectbox("Data set", datasets, index=datasets.index(source.label) if source.label in datasets else 0)
        mine = runs[runs["dataset"] == chosen]
        done = mine[(mine["status"] == "completed") & mine["top-1"].notna()]
        if not done.empty:
            curve = done.groupby(["protocol", "method", "budget"], as_index=False)["top-1"].agg(["mean", "std", "count"])
            fig = px.line(curve, x="budget", y="mean", color="method", facet_col="protocol", markers=True,
                          error_y="std", labels={"mean": "top-1", "budget": "budget B"},
                          hover_data={"count": True})
            fig.update_yaxes(tickformat=".0%")
            st.plotly_chart(fig, width="stretch", key="history_plot")
            st.caption("Mean top-1 per method and budget (error bars: std over repeated runs).")
        st.dataframe(mine[["id", "started", "status", "protocol", "method", "budget", "seed", "top-1", "error"]],
                     hide_index=True, width="stretch",
                     column_config={"top-1": st.column_config.NumberColumn(format="percent")})
        st.caption(f"Store: {store.path}")
