"""Data page: choose the image pool and the backbone, extract features with progress."""

import hashlib
import re
from pathlib import Path

import numpy as np
import streamlit as st

from bilaf_core._io import atomic_open
from bilaf_core.features import default_cache_dir
from studio import gallery, session, state

st.title("Data")
SOURCES = {"Built-in digits (offline)": "digits", "CIFAR-10": "cifar10", "CIFAR-100": "cifar100",
           "Fashion-MNIST": "fashion-mnist", "Image folder": "folder", "Image folder (zip upload)": "zip",
           "Feature file (upload)": "features"}
shared_cifar = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"

current = state.current_source()
form_state = session.app_state()
CHOICE_OF = {value: label for label, value in SOURCES.items()}


def keep(widget, name, label, default, **kwargs):
    return session.kept(widget, name, label, default=default, state=form_state, **kwargs)


with st.form("data_source"):
    choice = keep(st.selectbox, "source_choice", "Source", options=list(SOURCES),
                  default=CHOICE_OF["zip" if current.upload and current.dataset == "folder" else
                                    "features" if current.feature_file else current.dataset])
    dataset = SOURCES[choice]
    root = keep(st.text_input, "source_root", "Folder (local copy of the data set, or the image folder)",
                current.root if current.root and not current.upload else
                str(shared_cifar) if shared_cifar.is_dir() else "",
                help="CIFAR: the folder holding cifar-10-batches-py/ (or cifar10_jpeg.npz); "
                     "Fashion-MNIST: the folder of the *-ubyte.gz files (Debian's package is found by itself)")
    test_root = keep(st.text_input, "source_test_root",
                     "Test folder (optional, image folders): class subfolders, used to measure accuracy",
                     current.test_root)
    upload = st.file_uploader("Upload: a feature file (.npy, .npz with 'features', .parquet) or a zip of images "
                              "(class subfolders give labels)", type=["npy", "npz", "parquet", "zip"])
    backbone_label = keep(st.selectbox, "backbone_choice", "Backbone", options=list(state.BACKBONE_CHOICES),
                          default=next((label for label, name in state.BACKBONE_CHOICES.items()
                                        if name and name == current.backbone), list(state.BACKBONE_CHOICES)[0]))
    timm_name = keep(st.text_input, "timm_name", "timm model name (for 'Other timm model')",
                     current.backbone if current.backbone not in state.BACKBONE_CHOICES.values() else "")
    weights = keep(st.text_input, "weights_path", "Weights file (optional; for DINO: dino_deitsmall16_pretrain.pth)",
                   current.weights)
    submitted = st.form_submit_button("Load and extract features", type="primary")


def save_upload(file) -> Path:
    """Keep an upload under the cache, in a folder named by its content (a re-upload is
    free) and under the user's own file name (so messages and labels name it)."""
    data = file.getvalue()
    name = re.sub(r"[^\w.\- ]", "_", Path(file.name).name) or "upload"
    path = default_cache_dir() / "uploads" / hashlib.sha256(data).hexdigest()[:16] / name
    if not path.is_file():
        with atomic_open(path, "wb") as handle:
            handle.write(data)
    return path


def expected_upload(upload, suffixes: tuple[str, ...], what: str):
    if upload is None:
        raise ValueError(f"choose {what} to upload")
    if Path(upload.name).suffix.lower() not in suffixes:
        raise ValueError(f"{upload.name} is not {what} ({', '.join(suffixes)})")
    return upload


def chosen_source() -> state.Source:
    """The source the form describes; ValueError when it is incomplete or not allowed."""
    backbone = state.BACKBONE_CHOICES[backbone_label] or timm_name.strip()
    if not backbone:
        raise ValueError("type a timm model name, e.g. convnext_tiny, or pick another backbone")
    checked_weights = state.check_allowed(weights.strip()) if weights.strip() else ""
    if upload is not None and dataset not in ("features", "zip"):
        raise ValueError(f"{upload.name} is attached but the source is {choice}: choose "
                         f"'{CHOICE_OF['zip' if upload.name.lower().endswith('.zip') else 'features']}' to load it, "
                         "or remove the upload")
    if dataset == "features":
        saved = save_upload(expected_upload(upload, (".npy", ".npz", ".parquet"), "a feature file"))
        return state.Source(dataset="features", feature_file=str(saved), backbone="", upload=upload.name)
    if dataset == "zip":
        folder = state.unpacked_zip(save_upload(expected_upload(upload, (".zip",), "a zip of images")))
        return state.Source(dataset="folder", root=str(folder), backbone=backbone, weights=checked_weights,
                            upload=upload.name)
    needs_root = dataset == "folder" or (dataset.startswith("cifar") and root.strip())
    folder = state.check_allowed(root.strip()) if needs_root and root.strip() else ""
    if dataset == "folder" and not folder:
        raise ValueError("type the path of the image folder")
    return state.Source(dataset=dataset, root=folder if dataset != "digits" else "", backbone=backbone,
                        weights=checked_weights,
                        test_root=state.check_allowed(test_root.strip()) if dataset == "folder" and test_root.strip()
                        else "")


if submitted:
    try:
        source = chosen_source()
    except ValueError as exc:
        st.error(f"Cannot load this source: {exc}")
    else:
        notices, problem = [], None
        with st.status(f"Loading {source.label} ...", expanded=True) as status:
            try:
                with session.progress_bar("Features") as report:
                    fs = state.feature_set(source, progress=report, notify=notices.append)
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
if fs.failed:
    with st.expander(f"{len(fs.failed)} unreadable image(s) skipped"):
        st.dataframe({"id": [i for i, _ in fs.failed], "reason": [r for _, r in fs.failed]}, hide_index=True)
thumbs = state.thumbs(source)
if thumbs is not None:
    sample = np.random.default_rng(0).choice(len(fs.ids), size=min(32, len(fs.ids)), replace=False)
    captions = [str(fs.ids[i]) for i in sample]
    gallery.image_grid([thumbs[i] for i in sample], captions, width=80)
