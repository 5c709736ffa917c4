"""Datasets and feature extraction, offline: real images, the bundled pretrained
backbone, the cache (hit and resume), and every bad input of issue 3."""

import io

import numpy as np
import pytest
from PIL import Image

from conftest import CIFAR_IMAGES
from bilaf_core.data import load_pool
from bilaf_core.features import (
    extract_features,
    load_backbone,
    load_feature_file,
    thumbnails,
)


def _knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy (cosine)."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    neighbours = np.argsort(-sims, axis=1)[:, :k]
    votes = labels[neighbours]
    predicted = np.array([np.bincount(row, minlength=labels.max() + 1).argmax() for row in votes])
    return float((predicted == labels).mean())


def _cifar_pool(n):
    """The first n (<= 300) real CIFAR-10 training images, as a pool (from tests/data)."""
    from bilaf_core.data import Pool

    full = load_pool("cifar10", root=CIFAR_IMAGES)
    return Pool("cifar10-sub", full.ids[:n], full.labels[:n], full.class_names, f"{full.fingerprint}:{n}", full.load_image)


@pytest.fixture(scope="module")
def cifar_subset():
    return _cifar_pool(240)


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    """One cache for the module: the pretrained extraction is computed once."""
    return tmp_path_factory.mktemp("feature-cache")


def test_bundled_pretrained_backbone_separates_classes_far_better_than_random(cifar_subset, feature_cache):
    notes = []
    pretrained = load_backbone("tf_efficientnet_lite0", device="cpu", notify=notes.append)
    assert "bundled" in pretrained.weights_source and notes  # said, never silent
    random = load_backbone("tf_efficientnet_lite0", device="cpu", random_init=True)
    good = extract_features(cifar_subset, pretrained, cache_dir=feature_cache, batch_size=48)
    bad = extract_features(cifar_subset, random, cache_dir=feature_cache, batch_size=48)
    assert good.features.shape == (240, 1280)
    acc_good = _knn_accuracy(np.asarray(good.features), cifar_subset.labels)
    acc_bad = _knn_accuracy(np.asarray(bad.features), cifar_subset.labels)
    # measured: 0.62 vs 0.24 (5-NN, leave-one-out)
    assert acc_good > 0.5 and acc_good > acc_bad + 0.25, (acc_good, acc_bad)


def test_bundled_features_match_the_shared_precomputed_ones(cifar_subset, shared_dir, feature_cache):
    # shared/data/cifar10/cifar10_effl0_features.npz was made with the same weights and
    # transform (224 bicubic, no crop, mean = std = 0.5), so the rows must agree.
    backbone = load_backbone("tf_efficientnet_lite0", device="cpu", notify=lambda m: None)
    ours = extract_features(cifar_subset, backbone, cache_dir=feature_cache, batch_size=48).features[:16]
    with np.load(shared_dir / "data" / "cifar10" / "cifar10_effl0_features.npz", allow_pickle=False) as data:
        theirs = data["train_features"][:16].astype(np.float32)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() > 0.98, cosine


def test_cache_hit_is_fast_and_identical(tmp_path):
    pool = load_pool("digits")
    backbone = load_backbone("pixels")
    first = extract_features(pool, backbone, cache_dir=tmp_path)
    import time

    start = time.perf_counter()
    second = extract_features(pool, backbone, cache_dir=tmp_path)
    assert second.from_cache and not first.from_cache
    assert time.perf_counter() - start < 1.0
    np.testing.assert_array_equal(np.asarray(first.features), np.asarray(second.features))
    assert isinstance(second.features, np.memmap)


class _Interrupt(Exception):
    pass


def test_interrupted_extraction_resumes_from_its_last_chunk(tmp_path):
    cifar_subset = _cifar_pool(100)
    backbone = load_backbone("tf_efficientnet_lite0", device="cpu", random_init=True)
    saved = []

    def stop_after_two_chunks(fraction, message):
        if "saved" in message:
            saved.append(message)
            if len(saved) == 2:
                raise _Interrupt

    with pytest.raises(_Interrupt):
        extract_features(cifar_subset, backbone, cache_dir=tmp_path, chunk_size=32, batch_size=32,
                         progress=stop_after_two_chunks)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert sorted(p.name for p in folder.iterdir()) == ["chunk_00000.npz", "chunk_00001.npz"]  # no .tmp left
    computed = []
    resumed = extract_features(cifar_subset, backbone, cache_dir=tmp_path, chunk_size=32, batch_size=32,
                               progress=lambda f, m: computed.append(m) if "saved" in m else None)
    assert computed == ["tf_efficientnet_lite0: chunk 3/4 saved", "tf_efficientnet_lite0: chunk 4/4 saved"]
    whole = extract_features(cifar_subset, backbone, cache_dir=tmp_path / "fresh", chunk_size=32, batch_size=32)
    np.testing.assert_allclose(np.asarray(resumed.features), np.asarray(whole.features), rtol=1e-5, atol=1e-5)


def _write_image_folder(root):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), mode="L").save(root / "cats" / "gray.jpg")
    Image.fromarray(rng.integers(0, 255, (16, 16, 4), dtype=np.uint8), mode="RGBA").save(root / "dogs" / "alpha.webp")
    Image.fromarray(rng.integers(0, 65535, (16, 16), dtype=np.uint16)).save(root / "dogs" / "deep.png")
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    (root / "cats" / "truncated.jpg").write_bytes(buffer.getvalue()[:200])
    (root / "dogs" / "empty.bmp").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")


def test_folder_with_bad_images_skips_counts_and_lists_them(tmp_path):
    root = tmp_path / "images"
    _write_image_folder(root)
    pool = load_pool("folder", root=root)
    assert pool.class_names == ("cats", "dogs") and len(pool) == 11
    result = extract_features(pool, load_backbone("pixels"), cache_dir=tmp_path / "cache")
    assert sorted(i for i, _ in result.failed) == ["cats/truncated.jpg", "dogs/empty.bmp"]
    assert result.features.shape[0] == 9 and np.isfinite(result.features).all()
    assert set(result.ids) >= {"cats/gray.jpg", "dogs/alpha.webp", "dogs/deep.png"}  # converted, not skipped
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_flat_folder_has_no_labels_and_symlinks_out_are_ignored(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "a.png")
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    (root / "link.png").symlink_to(outside)
    pool = load_pool("folder", root=root)
    assert pool.labels is None and list(pool.ids) == ["a.png"]


def test_empty_folder_and_missing_folder_give_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found in"):
        load_pool("folder", root=tmp_path / "empty")
    with pytest.raises(ValueError, match="image folder not found"):
        load_pool("folder", root=tmp_path / "nope")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but carries no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_huge_image_is_refused_before_decoding(tmp_path):
    root = tmp_path / "bomb"
    root.mkdir()
    (root / "bomb.png").write_bytes(_png_header_only(40_000, 40_000))
    Image.new("RGB", (8, 8)).save(root / "fine.png")
    pool = load_pool("folder", root=root)
    with pytest.raises(Image.DecompressionBombError):
        pool.load_image(0)  # raised from the header, before any pixel is decoded
    result = extract_features(pool, load_backbone("pixels"), cache_dir=tmp_path / "cache")
    assert [i for i, _ in result.failed] == ["bomb.png"] and list(result.ids) == ["fine.png"]


def test_unknown_backbone_lists_close_names():
    with pytest.raises(ValueError, match="close names: .*vit_small_patch16_224"):
        load_backbone("vit_smal_patch16_224")


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    import torch

    path = tmp_path / "wrong.pth"
    torch.save({"conv_stem.weight": torch.zeros(3, 3, 3, 3), "bogus.layer": torch.zeros(2)}, path)
    with pytest.raises(ValueError) as info:
        load_backbone("tf_efficientnet_lite0", weights=path)
    message = str(info.value)
    assert "missing: bn1.weight" in message and "unexpected: bogus.layer" in message
    assert "conv_stem.weight (3, 3, 3, 3) vs (32, 3, 3, 3)" in message


def test_local_weights_file_round_trips(tmp_path):
    import timm
    import torch

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    path = tmp_path / "lite0.pth"
    torch.save({"state_dict": {f"module.{k}": t for k, t in model.state_dict().items()}}, path)
    backbone = load_backbone("tf_efficientnet_lite0", weights=path, device="cpu")
    assert backbone.weights_source == "file lite0.pth"


def test_dino_offline_says_what_to_do_or_falls_back_loudly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="--weights PATH .*dino_deitsmall16_pretrain.pth.*tf_efficientnet_lite0"):
        load_backbone("vit_small_patch16_224.dino")
    notes = []
    backbone = load_backbone("vit_small_patch16_224.dino", allow_fallback=True, notify=notes.append, device="cpu")
    assert backbone.name == "tf_efficientnet_lite0" and "falling back" in notes[0]


def test_offline_dataset_download_gives_one_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="no network to download it.*--root"):
        load_pool("cifar100", root=tmp_path)


def test_feature_files_npy_npz_parquet_and_bad_ones(tmp_path):
    import pandas as pd

    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    np.save(tmp_path / "f.npy", x)
    np.savez(tmp_path / "f.npz", features=x, labels=np.arange(10) % 2, ids=np.array([f"s{i}" for i in range(10)]))
    pd.DataFrame({"id": [f"p{i}" for i in range(10)], "label": np.arange(10) % 3, "features": list(x)}).to_parquet(
        tmp_path / "f.parquet")
    assert load_feature_file(tmp_path / "f.npy").features.shape == (10, 4)
    assert list(load_feature_file(tmp_path / "f.npz").ids[:2]) == ["s0", "s1"]
    assert load_feature_file(tmp_path / "f.parquet").labels.tolist()[:4] == [0, 1, 2, 0]
    bad = x.copy()
    bad[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_feature_file(tmp_path / "nan.npy")
    np.save(tmp_path / "flat.npy", x[:, 0])
    with pytest.raises(ValueError, match="2-D"):
        load_feature_file(tmp_path / "flat.npy")
    np.savez(tmp_path / "mismatch.npz", features=x, labels=np.arange(3))
    with pytest.raises(ValueError, match="labels has 3 entries but features has 10 rows"):
        load_feature_file(tmp_path / "mismatch.npz")


def test_a_feature_files_classes_name_its_integer_labels(tmp_path):
    """An .npz's ``classes`` array names the labels (the shared CIFAR-10 file has one): the
    labels stay integers (training and evaluation use them), ``named_labels`` reads them
    as names; labels outside the names are refused with what is wrong."""
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    names = np.array(["airplane", "automobile", "bird"])
    np.savez(tmp_path / "named.npz", train_features=x, train_labels=np.array([0, 1, 2, 2, 1, 0], dtype=np.int16),
             test_features=x[:2], test_labels=np.array([2, 0]), classes=names)
    fs = load_feature_file(tmp_path / "named.npz")
    assert fs.class_names == ("airplane", "automobile", "bird")
    assert fs.labels.tolist() == [0, 1, 2, 2, 1, 0] and np.issubdtype(fs.labels.dtype, np.integer)
    assert fs.named_labels.tolist() == ["airplane", "automobile", "bird", "bird", "automobile", "airplane"]
    assert fs.named_labels is fs.named_labels  # mapped once, not on every read
    np.savez(tmp_path / "plain.npz", features=x, labels=np.arange(6) % 2)
    assert load_feature_file(tmp_path / "plain.npz").named_labels.tolist() == [0, 1, 0, 1, 0, 1]  # no names: as is
    np.savez(tmp_path / "short.npz", features=x, labels=np.arange(6), classes=names)
    with pytest.raises(ValueError, match="'classes' names 3 classes, so labels must be integers 0 to 2"):
        load_feature_file(tmp_path / "short.npz")
    np.savez(tmp_path / "test.npz", features=x, labels=np.arange(6) % 3, test_features=x, test_labels=np.arange(6),
             classes=names)
    with pytest.raises(ValueError, match="so test_labels must be integers 0 to 2"):
        load_feature_file(tmp_path / "test.npz")


def test_extracted_features_keep_the_pools_class_names(tmp_path):
    pool = _cifar_pool(12)
    fs = extract_features(pool, load_backbone("pixels"), cache_dir=tmp_path)
    assert fs.class_names == tuple(pool.class_names) and fs.class_names[0] == "airplane"
    assert fs.named_labels.tolist() == [pool.class_names[c] for c in pool.labels]
    digits = extract_features(load_pool("digits").sample(20), load_backbone("pixels"), cache_dir=tmp_path)
    assert digits.named_labels is digits.labels  # names "0" .. "9" say nothing more than the numbers


def test_an_uncompressed_npz_is_mapped_in_place_and_a_compressed_one_read(tmp_path):
    # np.load read members through zipfile in 256 KB pieces: beside the app's torch import
    # thread each piece waited for the GIL (1.2 s for the 128 MB CIFAR-10 file)
    x = np.random.default_rng(0).standard_normal((300, 7)).astype(np.float16)
    np.savez(tmp_path / "plain.npz", labels=np.arange(300) % 3, features=x)
    np.savez_compressed(tmp_path / "packed.npz", features=x)
    np.savez(tmp_path / "fortran.npz", features=np.asfortranarray(x))
    plain = load_feature_file(tmp_path / "plain.npz")
    assert isinstance(plain.features, np.memmap) and plain.features.dtype == np.float16
    np.testing.assert_array_equal(plain.features, x)
    assert plain.labels.tolist()[:4] == [0, 1, 2, 0]
    np.testing.assert_array_equal(load_feature_file(tmp_path / "packed.npz").features, x)
    np.testing.assert_array_equal(load_feature_file(tmp_path / "fortran.npz").features, x)
    bad = x.copy()
    bad[5, 2] = np.inf
    np.savez(tmp_path / "inf.npz", features=bad)
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_feature_file(tmp_path / "inf.npz")


def test_thumbnails_cached_and_shaped(tmp_path):
    pool = load_pool("digits")
    thumbs = thumbnails(pool, size=32, cache_dir=tmp_path)
    assert thumbs.shape == (1797, 32, 32, 3) and thumbs.dtype == np.uint8
    assert isinstance(thumbnails(pool, size=32, cache_dir=tmp_path), np.memmap)


def test_features_cli_writes_npz_and_serves_the_second_call_from_cache(tmp_path, capsys, monkeypatch):
    from bilaf_core.cli import main

    monkeypatch.setenv("BILAF_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "digits.npz"
    assert main(["features", "--dataset", "digits", "--backbone", "pixels", "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as data:
        assert data["features"].shape == (1797, 192) and data["labels"].shape == (1797,) and data["ids"][0] == "digits/00000"
    assert main(["features", "--dataset", "digits", "--backbone", "pixels", "--out", str(out)]) == 0
    assert "from cache" in capsys.readouterr().err
    assert main(["features", "--dataset", "folder", "--root", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "image folder not found" in capsys.readouterr().err


def test_features_cli_subsets_and_writes_the_test_split(tmp_path, capsys, monkeypatch):
    from bilaf_core.cli import main

    monkeypatch.setenv("BILAF_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "cifar.npz"
    args = ["features", "--dataset", "cifar10", "--root", str(CIFAR_IMAGES), "--backbone", "pixels", "--limit", "30",
            "--test-limit", "12", "--seed", "3", "--out", str(out)]
    assert main(args) == 0
    pool = load_pool("cifar10", root=CIFAR_IMAGES)
    with np.load(out, allow_pickle=False) as data:
        assert data["features"].shape[0] == 30 and data["test_features"].shape[0] == 12
        rows = np.searchsorted(pool.ids, data["ids"])
        assert np.array_equal(pool.ids[rows], data["ids"]) and np.all(np.diff(rows) > 0)  # real ids, ascending
        assert np.array_equal(data["labels"], pool.labels[rows])
        assert data["classes"].tolist() == list(pool.class_names)  # the labels' names, read back below
        assert set(data["test_ids"]) <= set(pool.test.ids)
        first = data["ids"].copy()
    assert main(args) == 0  # the same seed, the same subset
    with np.load(out, allow_pickle=False) as data:
        assert np.array_equal(data["ids"], first)
    assert load_feature_file(out).named_labels[0] == pool.class_names[pool.labels[np.searchsorted(pool.ids, first[0])]]
    assert main(args[:7] + ["--test-limit", "0", "--out", str(out)]) == 0  # no --limit: every training image
    with np.load(out, allow_pickle=False) as data:
        assert "test_features" not in data.files and data["features"].shape[0] == pool.ids.size
    with pytest.raises(ValueError, match="at least 1 image"):
        pool.sample(0)


def test_vit_poolings_and_a_dino_layout_checkpoint(tmp_path):
    import timm
    import torch

    # The official dino_deitsmall16_pretrain.pth stores the backbone under timm's names
    # (cls_token, pos_embed, patch_embed.proj.*, blocks.*, norm.*), without a head.
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(vit.state_dict(), path)
    pool = load_pool("digits")
    from bilaf_core.data import Pool

    few = Pool("few", pool.ids[:4], pool.labels[:4], pool.class_names, "few-digits", pool.load_image)
    dims = {}
    for pooling in ("cls", "mean", "cls+mean"):
        backbone = load_backbone("vit_small_patch16_224.dino", weights=path, pooling=pooling, device="cpu")
        assert backbone.weights_source == "file dino_deitsmall16_pretrain.pth"
        dims[pooling] = extract_features(few, backbone, cache_dir=tmp_path / "c", num_workers=0).features.shape[1]
    assert dims == {"cls": 384, "mean": 384, "cls+mean": 768}
    with pytest.raises(ValueError, match="pooling 'avg' does not apply"):
        load_backbone("vit_small_patch16_224.dino", weights=path, pooling="avg")
