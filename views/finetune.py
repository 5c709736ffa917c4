"""Finetune page: train on the current selection in the background and compare runs."""

import pandas as pd
import plotly.express as px
import streamlit as st

from bilaf_core.data import read_label_csv
from bilaf_core.export import exported_indices
from bilaf_core.features import BUNDLED_BACKBONE, backbone_name_problem
from bilaf_core.errors import Cancelled
from bilaf_core.finetune import FinetuneConfig
from bilaf_core.store import run_method
from studio import exports, jobs, maps, session, state

#: Full finetuning's number inputs: FinetuneConfig's setting -> the input's label.
SETTINGS = {"epochs": "Epochs", "image_size": "Image size", "batch_size": "Batch size",
            "warmup_epochs": "Warm-up epochs", "eval_every": "Evaluate every N epochs",
            "eval_limit": "Evaluate on at most"}


def launch_asked() -> bool:
    """Whether this run follows a press of Launch (its value is set before the form is drawn)."""
    return bool(st.session_state.get("launch"))


st.title("Finetune and compare")
store = state.run_store()
source, fs = state.current_feature_set()
pool = session.pool_state(source)
emptied: list[str] = []  # what the page says of the number fields left empty or holding no number


def whole_number(column, name: str, label: str, default: int, **kwargs) -> int:
    """A number field kept for the pool. Emptied, or holding text that is no number (a
    browser sends both as no value), it keeps the last value given and the page says so, as
    the Select page does (it became 0, and Launch was refused for "got 0", never typed)."""
    value = session.kept(column.number_input, name, label, default=default, step=1, value=None, state=pool,
                         **kwargs)
    if value is None:
        value = session.setting(pool, name, default)
        emptied.append(f"The {label} field is empty or not a number: using {value:,}, the last value given.")
    return value

try:
    with session.progress_bar("Selecting") as report:
        result = session.current_selection(source, len(fs.ids), progress=report)
except ValueError as exc:
    st.error(f"The Select page's parameters do not give a selection ({exc}); change them there.")
    st.page_link("views/select.py", label="Go to Select", icon=":material/scatter_plot:")
    result = None

if result is not None:
    st.markdown(f"**Selection** {result.params['method']} · B = {result.budget:,} of {len(fs.ids):,} · "
                f"{source.label}")
    session.load_marks(pool, fs.ids)  # a run trains on what gets labelled: the export, the marks applied
    trained = exported_indices(result, excluded=pool.excluded, forced=pool.forced)
    effect = exports.marks_effect(result, trained)
    if effect is not None:
        (st.warning if not trained.size else st.info)(
            f"{effect} Runs train on the export (the samples that get labelled); clear or change the marks on "
            "the Inspect page to train on the selection as it is.")
    protocol = session.kept(st.radio, "protocol", "Protocol", options=list(jobs.PROTOCOL_NAMES),
                            default=jobs.DEFAULT_PROTOCOL, state=pool, format_func=jobs.PROTOCOL_NAMES.get, horizontal=True, help="Linear probe and k-NN train on frozen features in seconds; full "
                        "finetuning trains the backbone (slow on a CPU).")
    selected_labels = None
    unmeasured = None  # why a run on this pool could not be measured (no labelled test split)
    if fs.labels is None:
        test = None if source.feature_file else state.pool(source.dataset, source.root, source.test_root).test
        unmeasured = jobs.no_test_split(source, fs, test)
        if unmeasured is not None:
            st.error(f"Not ready to launch: {unmeasured}")
            st.page_link("views/data.py", label="Go to Data", icon=":material/database:")
        asked = st.empty()  # until the CSV is in
        upload = st.file_uploader("Labels CSV", type=["csv"], key="labels_csv")
        if upload is None:
            asked.warning("This pool has no labels. Upload a CSV with `id,label` for the selected samples (e.g. the "
                          "annotations of the exported selection); accuracy is measured on the labelled test "
                          "folder given on the Data page.")
        else:
            try:
                selected_labels = read_label_csv(upload, fs.ids[trained],
                                                 class_names=test.class_names if test is not None else ())[0]
            except ValueError as exc:
                st.error(f"{exc}")
    options, refused = {}, {}
    ready = (fs.labels is not None or selected_labels is not None) and trained.size > 0 and unmeasured is None
    with st.form("training_options", enter_to_submit=False):  # Enter in a field must not launch a run
        if protocol == "knn":
            options["k"] = session.kept(st.slider, "knn_k", "k neighbours", min_value=1, max_value=100, default=20,
                                        state=pool)
        elif protocol == "linear":
            options["c"] = session.kept(st.select_slider, "linear_c", "C (inverse regularisation)",
                                        options=[0.1, 1.0, 10.0, 100.0, 1000.0], default=10.0, state=pool)
        else:
            if source.feature_file:
                st.error("Full finetuning needs the images; this source is a feature file. Use linear probe or k-NN, "
                         "or load the image pool on the Data page.")
                ready = False
            default = FinetuneConfig()
            a, b, c = st.columns(3)
            backbone = source.backbone if source.backbone not in ("", "pixels") else BUNDLED_BACKBONE
            options["backbone"] = a.text_input("Backbone (timm)", backbone).strip()
            options["weights"] = b.text_input("Weights file (optional)", source.weights).strip() or None
            # No bounds in the browser (there a value outside them only turned the input red, its
            # range in a tooltip, and Launch did nothing): FinetuneConfig's check names what it refuses.
            options["epochs"] = whole_number(c, "ft_epochs", SETTINGS["epochs"], default.epochs)
            options["image_size"] = session.kept(a.select_slider, "ft_image_size", SETTINGS["image_size"],
                                                 options=[32, 64, 96, 128, 160, 224], default=default.image_size,
                                                 state=pool)
            options["batch_size"] = whole_number(b, "ft_batch_size", SETTINGS["batch_size"], default.batch_size)
            options["warmup_epochs"] = whole_number(c, "ft_warmup", SETTINGS["warmup_epochs"], default.warmup_epochs)
            options["eval_every"] = whole_number(a, "ft_eval_every", SETTINGS["eval_every"], default.eval_every)
            options["eval_limit"] = whole_number(b, "ft_eval_limit", SETTINGS["eval_limit"], default.eval_limit,
                                                 help="Samples of the test split (else of the unselected pool); a "
                                                      "number beyond what it holds evaluates on all of it.")
            # no bounds, as the Select page's seed (in a browser a number outside them only turned
            # the input red, its range in a tooltip, and the last seed stayed): the warning names them
            asked_seed = whole_number(c, "ft_seed", "Seed", 0)
            for said in emptied:
                st.warning(said)
            options["random_state"] = state.seed_of(asked_seed)
            moved_seed = state.seed_warning(asked_seed, doing="training", again="for another run")
            if moved_seed is not None:
                st.warning(moved_seed)
            config = FinetuneConfig(**{k: options[k] for k in SETTINGS})
            refused = [f"{SETTINGS[name]} {why}. Type a value in that range" for name, why in config.problems().items()]
            # known before launch (a misspelt name ended as a failed run in the history), the
            # Data page's backbones first among the close names
            unknown = backbone_name_problem(options["backbone"], preferred=state.OFFERED_BACKBONES)
            if unknown is not None:
                refused.append(f"Backbone (timm): {unknown}. Type a timm model name")
            for why in refused:
                st.error(f"{'Not launched: ' if launch_asked() else ''}{why} to launch a run.")
            if not refused and options["warmup_epochs"] and options["epochs"] < 2 * options["warmup_epochs"]:
                st.warning(f"{options['epochs']} epoch(s) with {options['warmup_epochs']} warm-up epoch(s): the "
                           "learning rate spends most of the run warming up "
                           + (f"(warm-up is cut to {config.warmup_used}) " if config.warmup_used <
                              options["warmup_epochs"] else "")
                           + "and accuracy stays low. Train at least twice as many epochs as warm-up epochs, or "
                           "lower the warm-up.")
            st.caption(f"SGD momentum {default.momentum}, weight decay {default.weight_decay}, lr {default.lr} with "
                       "linear warm-up and cosine decay, label smoothing "
                       f"{default.label_smoothing}; the best top-1 seen is reported (the papers' protocol). "
                       "A checkpoint is kept per epoch: the same run launched again resumes.")
        # enabled with a refused setting: a form sends its corrected values only with this button
        launch = st.form_submit_button("Launch", type="primary", disabled=not ready or store is None,
                                       key="launch") and not refused
    job = jobs.get(st.session_state.get("job_id"))
    if launch and options.get("weights"):  # the same folders as the Data page's weights field
        try:
            options["weights"] = state.check_allowed(options["weights"])
        except ValueError as exc:
            st.error(f"Not launched: the weights file {exc}")
            launch = False
    if launch and (job is None or job.done):
        data = jobs.TrainingInput(source, state.features(source), fs.labels, fs.ids, fs.kept, fs.backbone,
                                  jobs.features_line(source, fs), fs.test_features, fs.test_labels)
        job = jobs.submit(store.path, data, result, protocol, options, excluded=frozenset(pool.excluded),
                          forced=frozenset(pool.forced), selected_labels=selected_labels)
        st.session_state.job_id = job.id
    elif launch:
        st.warning("Not launched: a run of this session is still going; wait for it or cancel it.")

    @st.fragment(run_every=1.0)
    def show_job():
        current = jobs.get(st.session_state.get("job_id"))
        if current is None:
            return
        now = state.current_source()
        title = current.title(now, state.loaded_feature_set(now))
        if not current.done:
            st.progress(min(1.0, current.progress), text=f"{title}: {current.line()}")
            st.button("Cancel", on_click=current.cancel.set, key=f"cancel_{current.id}")
            return
        if st.session_state.get("shown_job") != current.id:  # the run just ended: refresh the history once
            st.session_state.shown_job = current.id
            st.rerun()
        error = current.future.exception()
        if error is not None:
            if isinstance(error, Cancelled):  # its own words: "Cancelled during epoch 3 of 10"
                kept = getattr(error, "epochs_kept", 0)
                st.warning(f"{title}: {error}." + (
                    f" {kept} finished epoch{'s are' if kept > 1 else ' is'} kept: launch the same run again to "
                    f"resume from epoch {kept + 1}." if kept else ""))
            else:
                st.error(f"{title}: failed: {error}")
            return
        outcome = current.future.result()
        if current.protocol == "finetune":
            st.success(f"{title}: best top-1 **{outcome.best_top1:.1%}** (epoch {outcome.best_epoch}), final "
                       f"{outcome.final_top1:.1%}, on {jobs.evaluated_on(outcome)}; "
                       f"backbone {jobs.backbone_line(current.backbone, outcome.backbone)}; weights: {outcome.weights}")
            if len(outcome.history) > 1:  # one epoch is a point, not a curve
                for column, key in zip(st.columns(2), maps.EPOCH_CURVES):  # different units: one chart each
                    column.plotly_chart(maps.epoch_figure(outcome.history, key), width="stretch",
                                        key=f"epochs_{key}_{current.id}")
        else:
            st.success(f"{title}: top-1 **{outcome.top1:.1%}** on {jobs.evaluated_on(outcome)}; "
                       f"{outcome.classes_seen} of {outcome.n_classes} classes in the selection")

    show_job()



def describe_selection(params) -> str:
    """The selection's parameters that tell runs apart, in one line."""
    if not isinstance(params, dict):
        return ""
    keys = ("n_cores", "core_method", "removal_ratio", "opponent_penalty", "denoise", "variant", "random_state") \
        if params.get("method") == "bilaf" else ("random_state",)
    keys += ("marks",)  # manual marks: samples taken out and added (studio.jobs.marks_params)
    short = {"n_cores": "K", "removal_ratio": "P_rm", "opponent_penalty": "δ", "random_state": "seed"}
    return " ".join(f"{short.get(k, k)}={params[k]}" for k in keys if k in params)


st.subheader("Run history")
if store is not None:
    runs = pd.DataFrame(store.runs())
    if runs.empty:
        st.caption(f"No runs yet in {store.path}.")
    else:
        runs["top-1"] = [m.get("top1") if isinstance(m, dict) else None for m in runs["metrics"]]
        runs["started"] = pd.to_datetime(runs["started"], unit="s").dt.strftime("%Y-%m-%d %H:%M")
        # a data set with its features: the digits' runs on pixels and on DINO features apart
        sets = sorted({(d, f) for d, f in zip(runs["dataset"], runs["backbone"]) if isinstance(d, str)},
                      key=lambda pair: (pair[0], str(pair[1])))
        here = (source.label, jobs.features_line(source, fs))
        chosen = st.selectbox("Data set and features", sets, index=sets.index(here) if here in sets else 0,
                              format_func=lambda pair: jobs.history_name(*pair))
        if here not in sets:
            st.caption(f"No runs yet on {jobs.history_name(*here)}; the history of another data set or features is "
                       "shown.")
        mine = runs[(runs["dataset"] == chosen[0]) & (runs["backbone"] == chosen[1])]
        curve = pd.DataFrame(store.learning_curve(*chosen))
        if not curve.empty:
            fig = px.line(curve, x="budget", y="mean", color="method", facet_col="protocol", markers=True,
                          error_y="std", labels={"mean": "top-1", "budget": "budget B"},
                          hover_data={"count": True})
            # top-1 on its whole scale (an automatic range cut its ticks below a 91.6 % point), and each
            # panel titled by its protocol's name, not "protocol=linear"
            fig.update_yaxes(**maps.TOP1_AXIS)
            fig.for_each_annotation(lambda a: a.update(text=jobs.PROTOCOL_NAMES.get(a.text.split("=")[-1], a.text)))
            # a tick at each budget run, not plotly's 88, 88.5, 89, 89.5, 90 around a single one
            fig.update_xaxes(tickmode="array", tickvals=sorted(curve["budget"].unique().tolist()), tickformat=",d")
            st.plotly_chart(fig, width="stretch", key="history_plot")
            st.caption("Mean top-1 per method and budget (error bars: std over repeated runs).")
        backbones, epochs = zip(*(jobs.trained(run) for run in mine.to_dict("records"))) if len(mine) else ((), ())
        mine = mine.assign(selection=[describe_selection(p) for p in mine["selection_params"]],
                           backbone=list(backbones), epochs=pd.array(list(epochs), dtype="Int64"),
                           # as the chart names them: hand-edited picks apart, protocols by name
                           method=[run_method(run) for run in mine.to_dict("records")],
                           protocol=[jobs.protocol_line(run) for run in mine.to_dict("records")],
                           **{"top-1": 100 * mine["top-1"].astype(float)})
        # the error before the long selection column: after it, the table's edge cut it to "ValueError:"
        table = st.dataframe(mine[["id", "started", "status", "protocol", "backbone", "epochs", "method", "budget",
                                   "top-1", "error", "selection"]],
                             hide_index=True, width="stretch", placeholder=state.NO_VALUE, key="run_history",
                             on_select="rerun", selection_mode="single-row",
                     column_config={"top-1": st.column_config.NumberColumn(format="%.1f %%"),  # "5%" beside "84.66%"
                                    "backbone": st.column_config.TextColumn(
                                        # as wide as its longest name, "asked X, used Y" (seen cut in Chromium),
                                        # up to a third of the table (a feature file's description can be long)
                                        width=min(460, max(200, 24 + 7 * max(map(len, map(str, backbones)), default=0))),
                                        help="Finetuning: the backbone trained ('asked X, used Y' where the one "
                                             "asked for could not be had offline and the bundled one was trained); "
                                             "linear probe and k-NN: the backbone of the frozen features"),
                                    "epochs": st.column_config.NumberColumn(help="Finetuning only"),
                                    "error": st.column_config.TextColumn(
                                        width="large", help="Written out in full under the table: the selected "
                                                            "run's, else the newest run's with an error")})
        # the column is cut in a narrow window (900 px): the message in full, wrapped
        failed = jobs.error_to_read(mine.to_dict("records"), table.selection.rows)
        if failed is not None:
            st.markdown(f"**Run {failed['id']}**, {failed['status']} ({failed['started']}, {failed['protocol']}, "
                        f"{failed['method']}, B = {failed['budget']:,}):")
            st.code(failed["error"], language=None, wrap_lines=True)
            st.caption("Select a run in the table (the box at its left edge) to read its error here.")
        elif table.selection.rows:
            st.caption("The selected run has no error.")
        st.caption(f"Store: {store.path}")
