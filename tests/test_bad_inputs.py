"""Bad inputs raise a ValueError naming the parameter and its allowed range; the
command line prints that one line and exits 2; degenerate pools still work."""

import numpy as np
import pytest

from bilaf_core import select
from bilaf_core.cli import main

X = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)


@pytest.mark.parametrize(
    "features,budget,kwargs,fragment",
    [
        (X, 5, {"n_cores": 10}, "budget must be at least n_cores"),
        (X, 101, {}, "budget must be in [1, 100]"),
        (X, 0, {}, "budget must be in [1, 100]"),
        (X[:5], 5, {"n_cores": 6}, "n_cores"),
        (X, 10, {"n_cores": 0}, "n_cores must be in [1, 10]"),
        (X, 10, {"n_cores": "automatic"}, "n_cores must be an integer or 'auto', got 'automatic'"),
        (np.where(np.arange(800).reshape(100, 8) == 17, np.nan, X), 10, {}, "NaN or infinite values in 1 row(s), first at row 2"),
        (np.where(np.arange(800).reshape(100, 8) == 0, np.inf, X), 10, {}, "NaN or infinite"),
        (X[:, 0], 10, {}, "must be 2-D"),
        (np.empty((0, 8)), 1, {}, "is empty"),
        (np.empty((5, 0)), 1, {}, "is empty"),
        (X, 10, {"cores": [1, 2, 100]}, "cores must be indices in [0, 99]"),
        (X, 10, {"cores": [-1, 2]}, "cores must be indices in [0, 99]"),
        (X, 10, {"cores": [1, 2, 2]}, "cores must be distinct"),
        (X, 2, {"cores": [1, 2, 3]}, "budget must be at least the number of cores (3)"),
        (X, 10, {"cores": [1, 2], "method": "kmeans"}, "cores are BiLAF's stage 1; method='kmeans' selects"),
        (X, 10, {"removal_ratio": -0.1}, "removal_ratio must be in [0, 1)"),
        (X, 10, {"removal_ratio": 1.0}, "removal_ratio must be in [0, 1)"),
        (X, 10, {"include_ratio": 1.5}, "include_ratio must be in (0, 1]"),
        (X, 10, {"include_ratio": 0.0}, "include_ratio must be in (0, 1]"),
        (X, 10, {"k_neighbors": 0}, "k_neighbors must be an integer >= 1"),
        (X, 10, {"opponent_penalty": 0.9}, "opponent_penalty must be >= 1.0"),
        (X, 10, {"random_state": 1.5}, "random_state must be None or a non-negative integer"),
        (X, 10, {"method": "magic"}, "method must be one of"),
        (X, 10, {"variant": "v2"}, "variant must be one of"),
        (X, 10, {"denoise": "dbscan"}, "denoise must be one of"),
        (X, 10, {"criterion": "entropy"}, "criterion must be one of"),
        (X, 10, {"process": "batch"}, "process must be one of"),
        (X, 10, {"core_method": "coreset"}, "core_method must be one of"),
        (np.array([["a", "b"]]), 1, {}, "numeric"),
        (X, 10.0, {}, "budget must be an integer"),
    ],
)
def test_bad_input_message_names_parameter_and_range(features, budget, kwargs, fragment):
    with pytest.raises(ValueError) as info:
        select(features, budget, **{"core_method": "random", "random_state": 0, **kwargs})
    assert fragment in str(info.value)


def test_finite_check_finds_every_bad_row_and_accepts_rows_whose_sum_overflows():
    from bilaf_core._validation import check_features

    big = np.full((6, 4), 3e38, dtype=np.float32)  # finite, but each row sums to inf in float32
    assert check_features(big) is not None
    bad = big.copy()
    bad[1, 0], bad[3, 2], bad[4, 0], bad[4, 1] = np.nan, -np.inf, np.inf, -np.inf  # inf - inf sums to NaN
    with pytest.raises(ValueError, match=r"in 3 row\(s\), first at row 1"):
        check_features(bad)


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_identical_points_and_pool_smaller_than_k_still_select(variant):
    same = select(np.ones((40, 5)), 12, n_cores=4, core_method="random", random_state=0, variant=variant)
    assert np.unique(same.indices).size == 12
    few = select(X[:6], 6, n_cores=2, k_neighbors=10, core_method="random", random_state=0, variant=variant)
    assert np.unique(few.indices).size == 6


def test_float16_float64_and_memmap_inputs(tmp_path):
    for dtype in (np.float16, np.float64):
        assert select(X.astype(dtype), 10, core_method="kmeans", random_state=0).indices.size == 10
    path = tmp_path / "features.npy"
    np.save(path, X)
    mapped = np.load(path, mmap_mode="r")
    assert select(mapped, 10, core_method="kmeans", random_state=0).indices.size == 10


def _run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_bad_input_one_line_exit_2(tmp_path, capsys):
    features = tmp_path / "f.npy"
    np.save(features, X)
    code, out, err = _run_cli(["select", "--features", str(features), "--budget", "5", "--n-cores", "10",
                               "--out", str(tmp_path / "o.json")], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["error: budget must be at least n_cores: got budget 5 < n_cores 10; "
                                        "raise the budget or lower n_cores"]
    assert not (tmp_path / "o.json").exists()


def test_cli_refuses_pickled_npy_and_missing_file(tmp_path, capsys):
    objects = tmp_path / "obj.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = _run_cli(["select", "--features", str(objects), "--budget", "1", "--out", str(tmp_path / "o.json")], capsys)
    assert code == 2 and "holds Python objects" in err and "Traceback" not in err
    code, _, err = _run_cli(["select", "--features", str(tmp_path / "none.npy"), "--budget", "1", "--out", "x.json"], capsys)
    assert code == 2 and "not found" in err
    truncated = tmp_path / "t.npz"
    truncated.write_bytes(b"PK\x03\x04broken")
    code, _, err = _run_cli(["select", "--features", str(truncated), "--budget", "1", "--out", "x.json"], capsys)
    assert code == 2 and "cannot read" in err


def test_cli_select_writes_json_with_required_keys(tmp_path, capsys):
    import json

    features = tmp_path / "f.npy"
    cores = tmp_path / "c.npy"
    np.save(features, X)
    np.save(cores, np.array([3, 50, 77]))
    code, out, _ = _run_cli(["select", "--features", str(features), "--budget", "12", "--cores", str(cores),
                             "--out", str(tmp_path / "sel.json"), "--seed", "0"], capsys)
    assert code == 0 and out == ""  # nothing on stdout
    document = json.loads((tmp_path / "sel.json").read_text())
    assert len(document["indices"]) == 12 and document["cores"] == [3, 50, 77]
    assert {"indices", "cores", "removed", "params"} <= set(document)
    assert document["indices"][0] == 3


def test_cli_select_writes_the_ids_the_app_shows_for_every_feature_format(tmp_path, capsys):
    import json

    import pandas as pd

    from bilaf_core.features import load_feature_file

    np.save(tmp_path / "plain.npy", X)
    np.savez(tmp_path / "bare.npz", features=X)  # no ids: row ids, as the app makes them
    pd.DataFrame({"id": [f"img{i}.jpg" for i in range(100)], "features": list(X)}).to_parquet(tmp_path / "named.parquet")
    for name in ("plain.npy", "bare.npz", "named.parquet"):
        out = tmp_path / f"{name}.json"
        code, _, _ = _run_cli(["select", "--features", str(tmp_path / name), "--budget", "5", "--out", str(out),
                               "--store", str(tmp_path / "runs.db"), "--seed", "0"], capsys)
        document = json.loads(out.read_text())
        expected = load_feature_file(tmp_path / name).ids[document["indices"]].tolist()
        assert code == 0 and document["ids"] == expected
    assert document["ids"][0].startswith("img")  # the parquet's own id column, not lost


def test_a_seed_beyond_faiss_range_is_refused_with_the_range():
    # faiss's k-means takes a C int: a seed of 2**31 raised OverflowError (a traceback in the app)
    for method in ("kmeans", "typiclust", "bilaf"):
        with pytest.raises(ValueError, match=r"random_state must be None or a non-negative integer seed, at most "
                                             r"2147483647 \(faiss's limit\), got 2147483648"):
            select(X, 10, method=method, random_state=2**31)
    assert select(X, 10, method="kmeans", random_state=2**31 - 1).indices.size == 10


def test_duplicate_rows_marks_exact_repeats_of_an_earlier_row():
    from bilaf_core.features import duplicate_rows

    assert duplicate_rows(X).dtype == bool and not duplicate_rows(X).any()
    same = duplicate_rows(np.ones((50, 8), dtype=np.float32))
    assert same.tolist() == [False] + [True] * 49
    mixed = X.copy()
    mixed[[10, 20, 30]] = mixed[3]
    mixed[40] = mixed[3] + np.float32(1e-6)  # one value apart: not a repeat
    mixed[50, 0], mixed[51], mixed[51, 0] = 0.0, mixed[50], -0.0  # 0.0 and -0.0 are the same value
    assert np.flatnonzero(duplicate_rows(mixed, chunk_rows=7)).tolist() == [10, 20, 30, 51]
    assert np.flatnonzero(duplicate_rows(mixed.astype(np.float64))).tolist() == [10, 20, 30, 51]
    small = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 1]])  # 3 values a row: no whole 8-byte words
    for dtype in (np.float16, np.int8, np.int64, bool):  # any numeric dtype
        assert duplicate_rows(small.astype(dtype)).tolist() == [False, False, True], dtype
    with pytest.raises(ValueError, match="must be 2-D"):
        duplicate_rows(X[0])


def test_duplicate_rows_is_exact_when_two_different_rows_share_a_hash(monkeypatch):
    import bilaf_core.features as features

    monkeypatch.setattr(features, "_row_hashes", lambda rows: np.zeros(len(rows), dtype=np.uint64))  # all collide
    rows = np.array([[1, 2], [3, 4], [1, 2], [3, 4], [5, 6]], dtype=np.float32)
    assert features.duplicate_rows(rows).tolist() == [False, False, True, True, False]


def test_sample_rows_names_the_ids_a_pool_lacks_and_its_range():
    from bilaf_core.data import sample_rows
    from studio.exports import typed_ids

    ids = np.array([f"digits/{i:05d}" for i in range(30)])
    assert sample_rows(ids, typed_ids("digits/00003,  digits/00001\n\ndigits/00003,")).tolist() == [3, 1]
    assert typed_ids("cats/my cat.jpg\n") == ["cats/my cat.jpg"]  # an id may hold spaces
    with pytest.raises(ValueError, match=r"^'digits/00099' is not an id of this pool: its 30 ids run from "
                                         r"'digits/00000' to 'digits/00029'$"):
        sample_rows(ids, ["digits/00099"])
    with pytest.raises(ValueError, match=r"'x', '7' are not ids .* \(a row number is not an id: row 7 is 'digits/00007'\)"):
        sample_rows(ids, ["x", "7"])
