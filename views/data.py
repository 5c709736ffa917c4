"""Data page: choose the image pool and the backbone, extract features with progress."""

import hashlib
import time
from pathlib import Path

import numpy as np
import streamlit as st

from bilaf_core._io import atomic_open
from bilaf_core.features import default_cache_dir
from studio import state

st.title("Data")
SOURCES = {"Built-in digits (offline)": "digits", "CIFAR-10": "cifar10", "CIFAR-100": "cifar100",
           "Fashion-MNIST": "fashion-mnist", "Image folder": "folder", "Image folder (zip upload)": "zip",
           "Feature file (upload)": "features"}
shared_cifar = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"

with st.form("data_source"):
    choice = st.selectbox("Source", list(SOURCES), key="source_choice")
    dataset = SOURCES[choice]
    root = st.text_input("Folder (local copy of the data set, or the image folder)", key="source_root",
                         value=str(shared_cifar) if shared_cifar.is_dir() else "",
                         help="CIFAR: the folder holding cifar-10-batches-py/ (or cifar10_jpeg.npz); "
                              "Fashion-MNIST: the folder of the *-ubyte.gz files (Debian's package is found by itself)")
    test_root = st.text_input("Test folder (optional, image folders): class subfolders, used to measure accuracy",
                              key="source_test_root")
    upload = st.file_uploader("Upload: a feature file (.npy, .npz with 'features', .parquet) or a zip of images "
                              "(class subfolders give labels)", type=["npy", "npz", "parquet", "zip"])
    backbone_label = st.selectbox("Backbone", list(state.BACKBONE_CHOICES), key="backbone_choice")
    timm_name = st.text_input("timm model name (for 'Other timm model')", key="timm_name")
    weights = st.text_input("Weights file (optional; for DINO: dino_deitsmall16_pretrain.pth)", key="weights_path")
    submitted = st.form_submit_button("Load and extract features", type="primary")


def save_upload(file) -> Path:
    """Keep an upload under the cache, named by its content (a re-upload is free)."""
    data = file.getvalue()
    path = default_cache_dir() / "uploads" / f"{hashlib.sha256(data).hexdigest()[:16]}{Path(file.name).suffix.lower()}"
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


if submitted:
    try:
        backbone = state.BACKBONE_CHOICES[backbone_label] or timm_name.strip()
        if not backbone:
            raise ValueError("type a timm model name, e.g. convnext_tiny, or pick another backbone")
        if dataset == "features":
            saved = save_upload(expected_upload(upload, (".npy", ".npz", ".parquet"), "a feature file"))
            source = state.Source(dataset="features", feature_file=str(saved), backbone="")
        elif dataset == "zip":
            folder = state.unpacked_zip(save_upload(expected_upload(upload, (".zip",), "a zip of images")))
            source = state.Source(dataset="folder", root=str(folder), backbone=backbone,
                                  weights=state.check_allowed(weights.strip()) if weights.strip() else "")
        else:
            needs_root = dataset == "folder" or (dataset.startswith("cifar") and root.strip())
            folder = state.check_allowed(root.strip()) if needs_root and root.strip() else ""
            if dataset == "folder" and not folder:
                raise ValueError("type the path of the image folder")
            source = state.Source(dataset=dataset, root=folder if dataset != "digits" else "", backbone=backbone,
                                  weights=state.check_allowed(weights.strip()) if weights.strip() else "",
                                  test_root=state.check_allowed(test_root.strip())
                                  if dataset == "folder" and test_root.strip() else "")
        with st.status(f"Loading {source.label} ...", expanded=True) as status:
            bar = st.progress(0.0)
            started = time.perf_counter()

            def progress(fraction: float, message: str) -> None:
                elapsed = time.perf_counter() - started
                eta = f" · about {elapsed / fraction - elapsed:.0f} s left" if 0 < fraction < 1 and elapsed > 2 else ""
                bar.progress(min(1.0, fraction), text=f"{message}{eta}")

            fs = state.feature_set(source, progress=progress, notify=lambda message: st.warning(message))
            status.update(label=f"{len(fs.ids):,} samples, {fs.features.shape[1]}-d features", state="complete")
        st.session_state.source = source
        st.session_state.pop("selection", None)
    except ValueError as exc:
        st.error(f"Cannot load this source: {exc}")

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
    st.image([thumbs[i] for i in sample], caption=captions, width=72)
