"""The Data page's choices turned into a :class:`studio.state.Source`: the source kinds the
page offers, uploads kept under the cache by content, and every check a typed folder,
weights file or upload gets (ValueError naming the problem and what to do)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from bilaf_core._io import atomic_open

from .state import (BACKBONE_CHOICES, FEATURE_FILE_TYPES, IMAGE_ZIP_TYPES, Source, check_allowed, unpacked_zip,
                    upload_dir)

__all__ = ["SOURCES", "save_upload", "source_from_form"]

#: The Data page's source choices: label -> kind ("zip" and "features" are uploads).
SOURCES = {"Built-in digits (offline)": "digits", "CIFAR-10": "cifar10", "CIFAR-100": "cifar100",
           "Fashion-MNIST": "fashion-mnist", "Image folder": "folder", "Image folder (zip upload)": "zip",
           "Feature file (upload)": "features"}
_LABEL_OF = {kind: label for label, kind in SOURCES.items()}


def save_upload(name: str, data: bytes) -> Path:
    """Keep an upload under the cache, in a folder named by its content (a re-upload is
    free) and under the user's own file name (so messages and labels name it)."""
    safe = re.sub(r"[^\w.\- ]", "_", Path(name).name) or "upload"
    path = upload_dir() / hashlib.sha256(data).hexdigest()[:16] / safe
    if not path.is_file():
        with atomic_open(path, "wb") as handle:
            handle.write(data)
    return path


def _expected(upload: tuple[str, bytes] | None, suffixes: tuple[str, ...], what: str) -> Path:
    if upload is None:
        raise ValueError(f"choose {what} to upload")
    if Path(upload[0]).suffix.lower() not in suffixes:
        raise ValueError(f"{upload[0]} is not {what} ({', '.join(suffixes)})")
    return save_upload(*upload)


def source_from_form(kind: str, *, root: str = "", test_root: str = "", backbone_label: str = "",
                     timm_name: str = "", weights: str = "", upload: tuple[str, bytes] | None = None) -> Source:
    """The source the Data page's form describes.

    Parameters
    ----------
    kind : a value of :data:`SOURCES`.
    root, test_root, weights : typed paths (checked against the allowed roots).
    backbone_label, timm_name : a key of :data:`studio.state.BACKBONE_CHOICES`, and the
        timm name typed for "Other timm model".
    upload : (file name, content) of the attached file, if any.

    Raises
    ------
    ValueError when the form is incomplete, a path is not allowed, or the upload does not
    fit the kind.
    """
    backbone = BACKBONE_CHOICES[backbone_label] or timm_name.strip()
    if not backbone:
        raise ValueError("type a timm model name, e.g. convnext_tiny, or pick another backbone")
    checked_weights = check_allowed(weights.strip()) if weights.strip() else ""
    if upload is not None and kind not in ("features", "zip"):
        suffix = Path(upload[0]).suffix.lower()
        if suffix not in FEATURE_FILE_TYPES + IMAGE_ZIP_TYPES:  # no source loads it
            raise ValueError(f"{upload[0]} is attached but the source is {_LABEL_OF[kind]}: remove the upload to load "
                             f"{_LABEL_OF[kind]}")
        wanted = _LABEL_OF["zip" if suffix in IMAGE_ZIP_TYPES else "features"]
        raise ValueError(f"{upload[0]} is attached but the source is {_LABEL_OF[kind]}: choose '{wanted}' to load it, "
                         "or remove the upload")
    if kind == "features":
        saved = _expected(upload, FEATURE_FILE_TYPES, "a feature file")
        return Source(dataset="features", feature_file=str(saved), backbone="", upload=upload[0])
    if kind == "zip":
        folder = unpacked_zip(_expected(upload, IMAGE_ZIP_TYPES, "a zip of images"))
        return Source(dataset="folder", root=str(folder), backbone=backbone, weights=checked_weights, upload=upload[0])
    needs_root = kind == "folder" or (kind.startswith("cifar") and root.strip())
    folder = check_allowed(root.strip()) if needs_root and root.strip() else ""
    if kind == "folder" and not folder:
        raise ValueError("type the path of the image folder")
    return Source(dataset=kind, root=folder if kind != "digits" else "", backbone=backbone, weights=checked_weights,
                  test_root=check_allowed(test_root.strip()) if kind == "folder" and test_root.strip() else "")
