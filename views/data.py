"""Data page: choose the image pool and the backbone, extract features with progress."""

import numpy as np
import streamlit as st

from bilaf_core.data import default_data_dir
from studio import gallery, session, sources, state

st.title("Data")
SOURCES = sources.SOURCES

current = state.current_source()
form_state = session.app_state()
CHOICE_OF = {value: label for label, value in SOURCES.items()}
ENGINES = {"This machine": "local", "Ray (a cluster, or a local Ray runtime)": "ray"}


def keep(widget, name, label, default, **kwargs):
    return session.kept(widget, name, label, default=default, state=form_state, **kwargs)


with st.form("data_source"):
    choice = keep(st.selectbox, "source_choice", "Source", options=list(SOURCES),
                  default=CHOICE_OF[sources.kind_of(current)])
    dataset = SOURCES[choice]
    root = keep(st.text_input, "source_root", "Folder (local copy of the data set, or the image folder)",
                current.root if current.root and not current.upload else "",
                help="CIFAR: the folder holding cifar-10-batches-py/ (or cifar10_jpeg.npz); empty: "
                     f"{default_data_dir()} (BILAF_DATA_DIR), where downloads go; "
                     "Fashion-MNIST: the folder of the *-ubyte.gz files (Debian's package is found by itself)")
    feature_path = keep(st.text_input, "source_feature_path",
                        f"Feature file path (for 'Feature file on this machine'; {', '.join(state.FEATURE_FILE_TYPES)})",
                        current.feature_file if current.feature_file and not current.upload else "",
                        help="A file on the machine the app runs on, e.g. one written by `python -m bilaf_core "
                             "features --out F.npz`: read in place, not copied")
    test_root = keep(st.text_input, "source_test_root",
                     "Test folder (optional, image folders): class subfolders, used to measure accuracy",
                     current.test_root)
    # the types its label names (it took a .txt): the browser refuses another file where it is dropped
    upload = st.file_uploader(f"Upload: a feature file ({state.FEATURE_FILE_TEXT}) "
                              f"or a zip of images ({', '.join(state.IMAGE_ZIP_TYPES)}; class subfolders give labels)",
                              type=list(state.UPLOAD_TYPES))
    backbone_label = keep(st.selectbox, "backbone_choice", "Backbone", options=list(state.BACKBONE_CHOICES),
                          default=next((label for label, name in state.BACKBONE_CHOICES.items()
                                        if name and name == (current.backbone or state.Source().backbone)),
                                       list(state.BACKBONE_CHOICES)[0]))  # a feature file has none: the start's
    timm_name = keep(st.text_input, "timm_name", "timm model name (for 'Other timm model')",
                     current.backbone if current.backbone not in state.BACKBONE_CHOICES.values() else "")
    weights = keep(st.text_input, "weights_path", "Weights file (optional; for DINO: dino_deitsmall16_pretrain.pth)",
                   current.weights)
    engine_label = keep(st.radio, "engine_choice", "Compute features on", options=list(ENGINES),
                        default=list(ENGINES)[0], horizontal=True,
                        help="Both write the same feature cache. Ray runs the backbone in one model per worker "
                             "(per GPU on a GPU cluster); see the README's 'Feature extraction on a Ray cluster'")
    ray_address = keep(st.text_input, "ray_address",
                       "Ray cluster address (HOST:PORT, what 'ray start --head' prints; empty: a local Ray runtime)",
                       "")
    submitted = st.form_submit_button("Load and extract features", type="primary")


engine = ENGINES[engine_label]
if submitted:
    # checked when given: a bad Ray address failed only when a load first reached the cluster
    # (never, for features already cached); a file typed as the image folder was "not found"
    try:
        problem = next(filter(None, (
            engine == "ray" and ray_address.strip() and state.ray_address_problem(ray_address.strip()),
            dataset == "folder" and (state.folder_problem(root) or state.folder_problem(test_root)))), None)
        if problem:
            raise ValueError(problem)
        source = sources.source_from_form(
            dataset, root=root, test_root=test_root, backbone_label=backbone_label, timm_name=timm_name,
            weights=weights, feature_path=feature_path, upload=None if upload is None else (upload.name, upload.getvalue()))
    except ValueError as exc:
        st.error(f"Cannot load this source: {exc}")
    else:
        # the source chosen wins over a file attached for another (sources.unused_upload)
        unused = None if upload is None else sources.unused_upload(dataset, upload.name)
        notices, problem = [unused] if unused else [], None
        with st.status(f"Loading {source.label} ...", expanded=True) as status:
            try:
                with session.progress_bar("Features") as report:
                    fs = state.feature_set(source, progress=report, notify=notices.append, engine=engine,
                                           ray_address=(ray_address.strip() or None) if engine == "ray" else None)
            except ValueError as exc:
                status.update(label=f"Cannot load {source.label}", state="error", expanded=False)
                problem = exc
            else:
                status.update(label=f"{len(fs.ids):,} samples, {fs.features.shape[1]}-d features", state="complete",
                              expanded=False)
                st.session_state.source = source
        if problem is not None:  # outside the status box, which folds
            st.error(f"Cannot load this source: {problem}")
        for notice in notices:  # e.g. the DINO -> EfficientNet fallback: outside the folded status box
            st.warning(notice)

source, fs = state.current_feature_set()
st.subheader(source.label)
a, b, c = st.columns(3)
a.metric("Samples", f"{len(fs.ids):,}")
b.metric("Feature dimensions", f"{fs.features.shape[1]:,}")
c.metric("Classes", "no labels" if fs.labels is None else f"{np.unique(fs.labels).size}")
st.caption(f"Features: {fs.backbone}" + (" · served from the cache" if fs.from_cache else ""))
repeats = state.duplicate_count(source)
if repeats:
    distinct = len(fs.ids) - repeats
    st.warning(f"{source.label}: {repeats:,} of its {len(fs.ids):,} rows repeat an earlier row exactly ({distinct:,} "
               f"distinct row{'s' if distinct != 1 else ''}). Identical rows are one point to a selection and to the "
               "map: a selection can spend labels on copies of one sample, and the map draws them on top of each "
               "other. Remove the repeats (keep one of each) and load the data again.")
if fs.failed:
    with st.expander(f"{len(fs.failed)} unreadable image(s) skipped"):
        st.dataframe({"id": [i for i, _ in fs.failed], "reason": [r for _, r in fs.failed]}, hide_index=True)
thumbs = state.thumbs(source)
if thumbs is not None:
    sample = np.random.default_rng(0).choice(len(fs.ids), size=min(32, len(fs.ids)), replace=False)
    captions = [str(fs.ids[i]) for i in sample]
    gallery.image_grid([thumbs[i] for i in sample], captions, width=80)
