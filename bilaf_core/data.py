"""Image pools: one registry of sources, each returning a :class:`Pool`.

A pool is a list of images (decoded lazily, one at a time), optional integer labels,
class names and a stable id per sample (an index-based id for data sets, the relative
path for folders) that exports use. The training split is the pool; a source with a
test split returns it as ``pool.test``.

Sources: ``digits`` (scikit-learn, offline default), ``cifar10`` / ``cifar100``
(torchvision format, or the project's JPEG archive ``cifar10_jpeg.npz``),
``fashion-mnist`` (torchvision's raw files, or Debian's ``dataset-fashion-mnist``),
``folder`` (any directory of images). Precomputed feature files are read by
:func:`bilaf_core.features.load_feature_file`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .network import network_available

__all__ = ["Pool", "DATASETS", "load_pool", "default_data_dir", "read_label_csv", "label_names", "sample_rows", "extract_image_zip", "to_rgb", "IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: Images larger than this are refused before their pixels are decoded.
MAX_IMAGE_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # PIL raises DecompressionBombError past 2x this
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Pool:
    """An image pool.

    Attributes
    ----------
    name : str
    ids : (N,) str, stable sample ids.
    labels : (N,) int64 or None (unlabelled folders).
    class_names : tuple of str
    fingerprint : str, changes whenever the images would (cache key).
    load_image : callable(i) -> PIL.Image in RGB
    test : Pool or None, the test split.
    """

    name: str
    ids: np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    fingerprint: str
    load_image: Callable[[int], Image.Image] = field(repr=False)
    test: "Pool | None" = None

    def __len__(self) -> int:
        return int(self.ids.size)

    def sample(self, size: int | None, *, random_state: int | None = 0) -> "Pool":
        """A seeded random subset of ``size`` images (ids kept, order ascending); the
        whole pool when ``size`` is None or not smaller. The test split is kept as is."""
        if size is None or size >= len(self):
            return self
        if size < 1:
            raise ValueError(f"a subset needs at least 1 image, got {size}")
        rows = np.sort(np.random.default_rng(random_state).choice(len(self), size=size, replace=False))
        load = self.load_image
        return Pool(self.name, self.ids[rows], None if self.labels is None else self.labels[rows], self.class_names,
                    f"{self.fingerprint}:sample{size}:{random_state}", lambda i: load(int(rows[i])), self.test)


def label_names(labels: np.ndarray | None, class_names: tuple[str, ...]) -> np.ndarray | None:
    """Labels as people read them: ``(N,)`` str array of the class name of each integer
    label (``class_names[label]``) where the names say more than the numbers; else
    ``labels`` unchanged (names "0", "1", ... as the digits have, none, or labels that
    are not integer class ids). None stays None. Labels themselves stay integers:
    training and evaluation need class ids; this is for tables, charts and exports."""
    if labels is None or not class_names or class_names == tuple(str(i) for i in range(len(class_names))):
        return labels
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.size and (labels.min() < 0 or
                                                                       labels.max() >= len(class_names)):
        return labels
    return np.asarray(class_names, dtype=str)[labels]


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (grayscale, RGBA, palette, 16-bit) to 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() or 1.0
        image = Image.fromarray(np.round(array * (255.0 / peak)).astype(np.uint8), mode="L")
    elif image.mode == "F":
        array = np.nan_to_num(np.asarray(image, dtype=np.float64))
        span = (array.max() - array.min()) or 1.0
        image = Image.fromarray(np.round((array - array.min()) * (255.0 / span)).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _array_pool(name: str, images: np.ndarray, labels, class_names, *, prefix: str, test: Pool | None = None) -> Pool:
    """A pool over an in-memory (N, H, W[, 3]) uint8 array."""
    digest = hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()[:16]
    ids = np.array([f"{prefix}/{i:05d}" for i in range(images.shape[0])])
    return Pool(name, ids, None if labels is None else np.asarray(labels, dtype=np.int64), tuple(class_names),
                f"{name}:{digest}", lambda i: to_rgb(Image.fromarray(images[i])), test)


# --- scikit-learn digits -------------------------------------------------------------
def _digits(root: str | None = None) -> Pool:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    return _array_pool("digits", images, digits.target, [str(c) for c in range(10)], prefix="digits")


# --- CIFAR ----------------------------------------------------------------------------
def _cifar(name: str, root: str | None) -> Pool:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    jpeg_archive = Path(root) / "cifar10_jpeg.npz" if root else None
    if name == "cifar10" and jpeg_archive is not None and jpeg_archive.is_file():
        return _cifar10_jpeg(jpeg_archive)
    folder = Path(root or default_data_dir())
    try:
        train = cls(str(folder), train=True, download=False)
        test = cls(str(folder), train=False, download=False)
    except RuntimeError:
        if not network_available():
            raise ValueError(
                f"{name} is not in {folder} and there is no network to download it. Download the 'python' "
                f"version of {name.upper()} from https://www.cs.toronto.edu/~kriz/cifar.html, unpack it into "
                f"{folder} (it creates {cls.base_folder}/), and give that folder (the app's Folder field, the CLI's --root)"
                + (", or pass the folder holding cifar10_jpeg.npz" if name == "cifar10" else "")
            ) from None
        train = cls(str(folder), train=True, download=True)
        test = cls(str(folder), train=False, download=True)
    test_pool = _array_pool(name, test.data, test.targets, test.classes, prefix=f"{name}/test")
    return _array_pool(name, train.data, train.targets, train.classes, prefix=f"{name}/train", test=test_pool)


def _cifar10_jpeg(archive: Path) -> Pool:
    """The JPEG copy of CIFAR-10 (see shared/data/cifar10/README.md): decoded on demand."""
    with np.load(archive, allow_pickle=False) as data:
        blob, offsets, labels = data["jpeg"], data["offsets"], data["label"]
        n_train, classes = int(data["n_train"]), tuple(str(c) for c in data["classes"])
    fingerprint = f"cifar10-jpeg:{hashlib.sha256(offsets.tobytes()).hexdigest()[:16]}"

    def split(start: int, stop: int, prefix: str, test: Pool | None = None) -> Pool:
        def load(i: int) -> Image.Image:
            row = start + i
            return Image.open(io.BytesIO(blob[offsets[row] : offsets[row + 1]].tobytes())).convert("RGB")

        ids = np.array([f"{prefix}/{i:05d}" for i in range(stop - start)])
        return Pool("cifar10", ids, labels[start:stop].astype(np.int64), classes, f"{fingerprint}:{prefix}", load, test)

    return split(0, n_train, "cifar10/train", test=split(n_train, labels.size, "cifar10/test"))


# --- Fashion-MNIST --------------------------------------------------------------------
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format), gzipped or not."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _find_idx(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _fashion_mnist(root: str | None) -> Pool:
    base = Path(root or default_data_dir())
    folders = [base, base / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST]
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    paths = [_find_idx(folders, stem) for stem in stems]
    if any(p is None for p in paths):
        if not network_available():
            raise ValueError(
                f"Fashion-MNIST files not found in {base}, {base / 'FashionMNIST/raw'} or {DEBIAN_FASHION_MNIST}, and "
                "there is no network to download them. Install Debian's package (apt-get install "
                "dataset-fashion-mnist) or put the four *-ubyte.gz files in a folder and give it (the app's Folder field, the "
                "CLI's --root)"
            )
        import torchvision

        torchvision.datasets.FashionMNIST(str(base), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(base), train=False, download=True)
        paths = [_find_idx(folders, stem) for stem in stems]
    train_x, train_y, test_x, test_y = (_read_idx(p) for p in paths)
    test = _array_pool("fashion-mnist", test_x, test_y, FASHION_CLASSES, prefix="fashion-mnist/test")
    return _array_pool("fashion-mnist", train_x, train_y, FASHION_CLASSES, prefix="fashion-mnist/train", test=test)


# --- image folders --------------------------------------------------------------------
def _scan_folder(root: Path) -> list[Path]:
    """Image files under ``root``, recursively, sorted; symlinks leading outside are skipped."""
    resolved_root = root.resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(resolved_root):
                continue  # never read outside the folder the user pointed at
            found.append(path)
    return found


def _folder_pool(root: Path, *, name: str = "folder", test_root: Path | None = None) -> Pool:
    if not root.is_dir():
        raise ValueError(f"image folder not found: {root}; give the path of a directory that holds images")
    files = _scan_folder(root)
    if not files:
        raise ValueError(
            f"no images found in {root} (looked recursively for {', '.join(IMAGE_EXTENSIONS)}); "
            "point at the folder that holds the image files or their class subfolders"
        )
    relative = [f.relative_to(root).as_posix() for f in files]
    labelled = all("/" in r for r in relative)  # every image inside a class subfolder
    class_names: tuple[str, ...] = ()
    labels = None
    if labelled:
        class_names = tuple(sorted({r.split("/", 1)[0] for r in relative}))
        index = {c: i for i, c in enumerate(class_names)}
        labels = np.array([index[r.split("/", 1)[0]] for r in relative], dtype=np.int64)
    # path, size and mtime of every file: any added, removed or rewritten image changes it
    listing = "\n".join([str(root.resolve())] + [f"{r}\t{f.stat().st_size}\t{f.stat().st_mtime_ns}"
                                                  for r, f in zip(relative, files)])
    digest = hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    fingerprint = f"{name}:{digest}"
    ids = np.array(relative, dtype=object).astype(str)
    test = _folder_pool(test_root, name=f"{name}-test") if test_root is not None else None
    if test is not None and labelled and test.class_names != class_names:
        raise ValueError(
            f"the test folder's classes {list(test.class_names)} differ from the pool's {list(class_names)}; "
            "give both folders the same class subfolders"
        )
    return Pool(name, ids, labels, class_names, fingerprint, lambda i: _open_image(files[i]), test)


def _open_image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


def default_data_dir() -> Path:
    """Where data sets are looked for and downloaded when no folder is given: BILAF_DATA_DIR,
    else ~/.cache/bilaf-studio/data."""
    return Path(os.environ.get("BILAF_DATA_DIR", Path.home() / ".cache" / "bilaf-studio" / "data"))


DATASETS: dict[str, Callable[[str | None], Pool]] = {
    "digits": _digits,
    "cifar10": lambda root: _cifar("cifar10", root),
    "cifar100": lambda root: _cifar("cifar100", root),
    "fashion-mnist": _fashion_mnist,
    "folder": lambda root: _folder_pool(Path(root)) if root else _missing_root(),
}


def _missing_root() -> Pool:
    raise ValueError("the folder data set needs --root DIR, the directory that holds the images")


def load_pool(name: str, *, root: str | os.PathLike | None = None, test_root: str | os.PathLike | None = None) -> Pool:
    """Load a registered pool by name.

    Parameters
    ----------
    name : one of :data:`DATASETS`.
    root : local folder of the data (a download goes there too when the network allows);
        for ``folder``, the image directory.
    test_root : for ``folder``, an optional separate test folder.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, DATASETS))}, got {name!r}")
    if name == "folder" and root:
        return _folder_pool(Path(root), test_root=Path(test_root) if test_root else None)
    return DATASETS[name](None if root is None else str(root))


def sample_rows(ids, wanted) -> np.ndarray:
    """The pool rows of the sample ids ``wanted``, in the order given (an id given twice
    counts once).

    Parameters
    ----------
    ids : (N,) the pool's sample ids (:attr:`Pool.ids`, a feature set's ids).
    wanted : iterable of ids, compared as text (surrounding spaces ignored).

    Returns
    -------
    rows : (k,) int64

    Raises
    ------
    ValueError : naming the ids that are not in the pool (the first 10) and the pool's
        ids' range, first to last; a whole number that is a row of the pool is named
        with its id (a row typed for an id).
    """
    ids = np.asarray(ids).astype(str).tolist()
    row = {sample: i for i, sample in enumerate(ids)}
    asked = list(dict.fromkeys(str(sample).strip() for sample in wanted))
    unknown = [sample for sample in asked if sample not in row]
    if unknown:
        listed = some_of(list(map(repr, unknown)))
        if not ids:
            raise ValueError(f"{listed}: this pool has no samples")
        rows = [int(s) for s in unknown if s.isdigit() and int(s) < len(ids)]
        hint = (f" (a row number is not an id: row {rows[0]} is {ids[rows[0]]!r})" if rows else "")
        raise ValueError(f"{listed} {'is not an id' if len(unknown) == 1 else 'are not ids'} of this pool: its "
                         f"{len(ids):,} ids run from {ids[0]!r} to {ids[-1]!r}{hint}")
    return np.array([row[sample] for sample in asked], dtype=np.int64)


def some_of(names: list[str], *, limit: int = 10) -> str:
    """The first ``limit`` names, comma-separated, and how many more there are ("a, b, c
    and 195 more"): a message about many samples stays readable."""
    return ", ".join(names[:limit]) + (f" and {len(names) - limit:,} more" if len(names) > limit else "")


def read_label_csv(path: str | os.PathLike, sample_ids, *, class_names: tuple[str, ...] = ()) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels for ``sample_ids`` from a CSV with ``id`` and ``label`` columns (extra rows
    are ignored). A label is a class id or a class name: names map to their position in
    ``class_names`` when given, else to their rank in sorted order.

    ``path``: a file, or a file object (its ``name`` is what messages call it).

    Returns
    -------
    labels : (len(sample_ids),) int64
    class_names : the names, in class-id order.
    """
    import pandas as pd

    # a path as given; a file object (an app's upload) by its file name
    named = path if isinstance(path, (str, os.PathLike)) else getattr(path, "name", path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the label CSV {named}: {exc}") from None
    if not {"id", "label"} <= set(frame.columns):
        raise ValueError(f"the label CSV {named} needs 'id' and 'label' columns, found {', '.join(frame.columns)}")
    frame = frame.drop_duplicates("id", keep="last").set_index("id")
    wanted = [str(i) for i in sample_ids]
    missing = [i for i in wanted if i not in frame.index or not frame.at[i, "label"].strip()]
    if missing:
        raise ValueError(f"the label CSV {named} has no label for {len(missing)} selected sample(s), first {missing[0]!r}; "
                         "label every selected sample")
    values = [frame.at[i, "label"].strip() for i in wanted]
    if all(value.isdigit() for value in values):
        labels = np.array([int(value) for value in values], dtype=np.int64)
        return labels, tuple(class_names) or tuple(str(c) for c in range(int(labels.max()) + 1))
    names = tuple(class_names) or tuple(sorted(set(values)))
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"the label CSV {named} names unknown classes {unknown[:5]}; known: {', '.join(names[:20])}")
    position = {name: i for i, name in enumerate(names)}
    return np.array([position[value] for value in values], dtype=np.int64), names


#: Limits for an uploaded zip of images (a zip bomb or a stray archive is refused).
MAX_ZIP_FILES = 200_000
MAX_ZIP_BYTES = 8 * 1024**3


def extract_image_zip(archive: str | os.PathLike, target: str | os.PathLike, *, max_files: int = MAX_ZIP_FILES,
                      max_bytes: int = MAX_ZIP_BYTES) -> Path:
    """Extract the images of a zip into ``target`` (created) and return it.

    Every entry is checked before anything is written: absolute paths, ``..`` parts,
    symlinks and entries resolving outside ``target`` are refused, as are archives with
    more than ``max_files`` entries or ``max_bytes`` uncompressed. Only image files
    (:data:`IMAGE_EXTENSIONS`) are written, each atomically. The pool is then
    :func:`load_pool` ``("folder", root=target)``.
    """
    import stat
    import zipfile

    from ._io import atomic_open

    target = Path(target)
    try:
        bundle = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read the zip {Path(archive).name}: {exc}") from None
    with bundle:
        entries = [e for e in bundle.infolist() if not e.is_dir()]
        if len(entries) > max_files:
            raise ValueError(f"the zip holds {len(entries):,} files, more than the {max_files:,} allowed")
        total = sum(e.file_size for e in entries)
        if total > max_bytes:
            raise ValueError(f"the zip unpacks to {total / 1024**3:.1f} GB, more than the {max_bytes / 1024**3:.0f} GB "
                             "allowed; point the app at an unpacked folder instead")
        resolved = target.resolve()
        for entry in entries:
            name = entry.filename
            if stat.S_ISLNK(entry.external_attr >> 16):
                raise ValueError(f"the zip entry {name!r} is a symbolic link; links are not extracted")
            parts = Path(name).parts
            destination = (target / name).resolve()
            if Path(name).is_absolute() or ".." in parts or not destination.is_relative_to(resolved):
                raise ValueError(f"the zip entry {name!r} would be written outside the target folder; "
                                 "the archive is refused")
        images = [e for e in entries if Path(e.filename).suffix.lower() in IMAGE_EXTENSIONS]
        if not images:
            raise ValueError(f"the zip holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        for entry in images:
            with bundle.open(entry) as source, atomic_open(target / entry.filename, "wb") as handle:
                while chunk := source.read(1 << 20):
                    handle.write(chunk)
    return target
