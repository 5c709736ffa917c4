"""The Data page's choices turned into a :class:`studio.state.Source`: the source kinds the
page offers, uploads kept under the cache by content, and every check a typed folder,
weights file or upload gets (ValueError naming the problem and what to do)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from bilaf_core._io import atomic_open

from .state import (BACKBONE_CHOICES, FEATURE_FILE_TEXT, FEATURE_FILE_TYPES, IMAGE_ZIP_TYPES, Source, check_allowed,
                    unpacked_zip, upload_dir)

__all__ = ["SOURCES", "LABEL_OF", "FEATURE_FILE_WAYS", "kind_of", "save_upload", "feature_file_path",
           "unused_upload", "source_from_form"]

#: The Data page's source choices: label -> kind ("zip" and "features" are uploads).
SOURCES = {"Built-in digits (offline)": "digits", "CIFAR-10": "cifar10", "CIFAR-100": "cifar100",
           "Fashion-MNIST": "fashion-mnist", "Image folder": "folder", "Image folder (zip upload)": "zip",
           "Feature file (upload)": "features", "Feature file on this machine": "feature_path"}
LABEL_OF = {kind: label for label, kind in SOURCES.items()}
#: The Data page's two ways to a feature file, in words (what to do when one is missing).
FEATURE_FILE_WAYS = (f"type its path under '{LABEL_OF['feature_path']}' or upload it with '{LABEL_OF['features']}' "
                     "on the Data page")


def kind_of(source: Source) -> str:
    """The :data:`SOURCES` kind that makes ``source`` (what the Data page's list shows for
    the current pool, also for one opened by a link or by BILAF_START_FEATURES)."""
    if source.upload:
        return "zip" if source.dataset == "folder" else "features"
    return "feature_path" if source.feature_file else source.dataset


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
        raise ValueError(f"choose {what} ({', '.join(suffixes)}) to upload")
    if Path(upload[0]).suffix.lower() not in suffixes:
        raise ValueError(f"{upload[0]} is not {what} ({', '.join(suffixes)})")
    return save_upload(*upload)


def feature_file_path(typed: str) -> str:
    """A typed feature file's resolved path (the Data page's, a link's ``file=``), checked:
    allowed, a file, a type the loader reads (the allowed folders first, so that no answer
    tells what lies outside them); a ValueError names the path and what to do."""
    if not typed.strip():
        raise ValueError("type the path of the feature file "
                         f"({', '.join(FEATURE_FILE_TYPES)}), or choose '{LABEL_OF['features']}' to upload one")
    path = Path(check_allowed(typed.strip()))
    if path.is_dir():
        raise ValueError(f"{typed.strip()} is a folder, not a feature file: give the file itself "
                         f"({', '.join(FEATURE_FILE_TYPES)}), or choose 'Image folder' for a folder of images")
    if not path.is_file():
        raise ValueError(f"{typed.strip()} was not found: check the path (it is read on the machine the app runs on)")
    if path.suffix.lower() not in FEATURE_FILE_TYPES:
        raise ValueError(f"{path.name} is not a feature file ({FEATURE_FILE_TEXT})")
    return str(path)


def unused_upload(kind: str, name: str) -> str | None:
    """What the Data page says of an attached file ``name`` that the source ``kind`` does not
    load (None when the kind loads uploads): the source chosen wins, the file is left
    attached (it refused to load "Feature file on this machine" until the upload was removed)."""
    if kind in ("features", "zip"):
        return None
    wanted = LABEL_OF["zip" if Path(name).suffix.lower() in IMAGE_ZIP_TYPES else "features"]
    return (f"{name} is attached but not loaded: the source is {LABEL_OF[kind]}. Choose '{wanted}' to load the "
            "file, or remove it.")


def source_from_form(kind: str, *, root: str = "", test_root: str = "", backbone_label: str = "",
                     timm_name: str = "", weights: str = "", feature_path: str = "", upload: tuple[str, bytes] | None = None) -> Source:
    """The source the Data page's form describes.

    Parameters
    ----------
    kind : a value of :data:`SOURCES`.
    root, test_root, weights, feature_path : typed paths (checked against the allowed
        roots); ``feature_path`` is the feature file of "Feature file on this machine".
    backbone_label, timm_name : a key of :data:`studio.state.BACKBONE_CHOICES`, and the
        timm name typed for "Other timm model".
    upload : (file name, content) of the attached file, if any; ignored by a kind that
        loads no upload (:func:`unused_upload` says so).

    Raises
    ------
    ValueError when the form is incomplete, a path is not allowed, or the upload of an
    upload kind is missing or of another type.
    """
    backbone = BACKBONE_CHOICES[backbone_label] or timm_name.strip()
    if not backbone:
        raise ValueError("type a timm model name, e.g. convnext_tiny, or pick another backbone")
    checked_weights = check_allowed(weights.strip()) if weights.strip() else ""
    if kind == "feature_path":
        return Source(dataset="features", feature_file=feature_file_path(feature_path), backbone="")
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
