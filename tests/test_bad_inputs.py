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
        (np.empty(0), 1, {}, "is empty (shape (0,))"),  # was told to reshape "a single vector"
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


# The app's own bad inputs, page by page (streamlit.testing.v1.AppTest on the offline digits).

from pathlib import Path  # noqa: E402

from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _page(page: str | None = None, **params) -> AppTest:
    """The app (opened from a link carrying ``params``, if any), on ``page``."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params.update(params)
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _shown(at: AppTest, name: str) -> int:
    return int(next(m.value for m in at.metric if m.label == name).replace(",", ""))


def _select(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Select").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_an_emptied_budget_or_seed_field_keeps_the_last_value_and_says_so():
    """Emptying Budget B (or typing text, which a browser sends as no value) selected with
    0, that is 1 sample, and the field showed 0."""
    at = _page()
    at.number_input(key="budget").set_value(120)
    assert _shown(_select(at), "Selected") == 120
    at.number_input(key="budget").set_value(None)
    _select(at)
    said = [w.value for w in at.warning]
    assert said == ["The Budget B field is empty or not a number: selecting B = 120, the last value given. Type a "
                    "number of samples and press Select."], said
    assert _shown(at, "Selected") == 120 and not at.error
    assert at.number_input(key="budget").value is None  # the field is left as the user left it, not 0
    at.number_input(key="budget").set_value(90)
    at.number_input(key="seed").set_value(None)
    _select(at)
    assert [w.value for w in at.warning] == ["The Seed field is empty or not a number: selecting with seed 0, the last "
                                             "value given. Type a whole number and press Select."]
    assert _shown(at, "Selected") == 90
    at.radio(key="budget_unit").set_value("% of the pool").run()
    at.number_input(key="budget_percent").set_value(None)
    at.number_input(key="seed").set_value(0)
    _select(at)
    assert [w.value for w in at.warning] == ["The Budget (% of the pool) field is empty or not a number: selecting 5.01 "
                                             "% of the pool, the last value given. Type a percentage of the pool and "
                                             "press Select."]


def test_k_slider_ends_at_the_budget_and_a_larger_k_is_moved_down_with_a_warning():
    """K reached 1,000 whatever B was: a high K left an error-only page."""
    at = _page()
    assert at.select_slider(key="n_cores").options[-1] == "90"  # B = 90 of the digits' 1,797
    at.number_input(key="budget").set_value(120)
    _select(at)
    assert at.select_slider(key="n_cores").options[-1] == "120"
    at.select_slider(key="n_cores").set_value(100)
    assert _shown(_select(at), "Core") == 100
    at.number_input(key="budget").set_value(5)  # K kept at 100 from before
    _select(at)
    said = ("K = 100 is more than the budget B = 5: selecting with K = 5. Raise the budget first for more cores. "
            "K = 100 comes back when the budget allows it.")
    assert not at.error, [e.value for e in at.error]
    assert [w.value for w in at.warning] == [said]
    assert at.select_slider(key="n_cores").value == 5 and _shown(at, "Core") == 5 and _shown(at, "Selected") == 5
    at.run()  # a rerun of nobody's doing (the background map arriving) keeps the message
    assert [w.value for w in at.warning] == [said]
    at.number_input(key="budget").set_value(40)
    _select(at)  # a change of settings: the message goes; the slider now ends at 40
    assert not at.warning and at.select_slider(key="n_cores").options[-1] == "40"
    at.select_slider(key="n_cores").set_value(30)
    assert _shown(_select(at), "Core") == 30
    at.number_input(key="budget").set_value(10)
    at.select_slider(key="n_cores").set_value(20)  # both in one press: the K moved is the one just set
    _select(at)
    assert [w.value for w in at.warning] == ["K = 20 is more than the budget B = 10: selecting with K = 10. Raise the "
                                             "budget first for more cores. K = 20 comes back when the budget allows it."]


def test_a_k_moved_down_by_a_small_budget_comes_back_with_the_budget():
    """K = 20, then a budget typed as 5 (K moved to 5), then B = 90 again: K stayed 5 for good,
    'set by hand', and the address kept n_cores=5. It comes back, and says so; a K the user
    sets meanwhile is theirs."""
    at = _page(data="digits", budget="90", n_cores="20")
    assert _shown(at, "Core") == 20
    at.number_input(key="budget").set_value(5)
    _select(at)
    assert at.select_slider(key="n_cores").value == 5 and _shown(at, "Core") == 5
    at.number_input(key="budget").set_value(12)  # still below 20: K stays 5, held
    _select(at)
    assert at.select_slider(key="n_cores").value == 5 and not at.warning
    at.number_input(key="budget").set_value(90)
    _select(at)
    assert at.select_slider(key="n_cores").value == 20 and _shown(at, "Core") == 20
    assert [w.value for w in at.warning] == ["K = 20 is back: the budget B = 90 allows it again."]
    at.number_input(key="budget").set_value(5)
    _select(at)
    at.select_slider(key="n_cores").set_value(3)  # the user's own K after the move: nothing comes back
    at.number_input(key="budget").set_value(90)
    _select(at)
    assert at.select_slider(key="n_cores").value == 3 and _shown(at, "Core") == 3


def test_a_link_whose_k_is_above_its_budget_opens_with_k_moved_down():
    at = _page(data="digits", budget="8", n_cores="50")
    assert not at.error, [e.value for e in at.error]
    assert at.select_slider(key="n_cores").value == 8 and _shown(at, "Core") == 8
    assert any("K = 50 is more than the budget B = 8" in w.value for w in at.warning)


def test_the_select_form_says_its_changes_apply_when_select_is_pressed():
    at = _page()
    assert any("apply when you press **Select**" in c.value and "leaving the page" in c.value for c in at.caption)


def test_the_pool_share_is_written_one_way_everywhere():
    """"0.06%" under the counts, "0.0556 %" in the guidance beside it."""
    at = _page()
    at.number_input(key="budget").set_value(1)
    _select(at)
    captions = [c.value for c in at.caption]
    assert any(c.startswith("B = 1 sample, 0.0556 % of the 1,797-sample pool.") for c in captions), captions
    assert any("near 0.0556 % of the pool" in c for c in captions), captions
    from bilaf_core.guidance import pool_share

    assert [pool_share(f) for f in (0.05, 1 / 1797, 0.33389, 1.0)] == ["5 %", "0.0556 %", "33.4 %", "100 %"]


def test_a_one_sample_feature_file_says_why_k_is_1(tmp_path, monkeypatch):
    """It said "K = 1 (set by hand)" though nobody set K."""
    path = tmp_path / "one.npy"
    np.save(path, np.ones((1, 8), dtype=np.float32))
    monkeypatch.setenv("BILAF_START_FEATURES", str(path))
    at = _page()
    assert _shown(at, "Selected") == 1
    captions = [c.value for c in at.caption]
    assert not any("set by hand" in c for c in captions), captions
    assert any("K = 1 (the pool has a single sample)" in c for c in captions), captions


def test_data_page_refuses_a_bad_ray_address_when_it_is_given():
    """'not an address' or port 99999 loaded (from the cache) without a word."""
    at = _page("views/data.py")
    at.radio(key="engine_choice").set_value("Ray (a cluster, or a local Ray runtime)")
    for address, part in (("not an address", "got 'not an address'"),
                          ("127.0.0.1:99999", "got '127.0.0.1:99999' (its port, 99999, is outside 1 to 65535)")):
        at.text_input(key="ray_address").set_value(address)
        next(b for b in at.button if b.label == "Load and extract features").click().run()
        assert not at.exception
        said = [e.value for e in at.error]
        assert len(said) == 1 and part in said[0] and "HOST:PORT" in said[0], said


def test_data_page_says_an_image_folder_that_is_a_file_is_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("BILAF_ALLOWED_ROOTS", str(tmp_path))
    (tmp_path / "cat.png").write_bytes(b"not really")
    at = _page("views/data.py")
    at.selectbox(key="source_choice").set_value("Image folder")
    at.text_input(key="source_root").set_value(str(tmp_path / "cat.png"))
    next(b for b in at.button if b.label == "Load and extract features").click().run()
    assert [e.value for e in at.error] == [f"Cannot load this source: {tmp_path / 'cat.png'} is a file, not a folder: "
                                           "give the folder that holds the images"]


def test_the_data_pages_uploader_takes_only_the_types_its_label_names():
    """It took a .txt (its label lists .npy, .npz, .parquet and .zip): one list, the loader's."""
    from bilaf_core.features import FEATURE_FILE_TYPES

    at = _page("views/data.py")
    uploader = at.get("file_uploader")[0].proto
    assert list(uploader.type) == [*FEATURE_FILE_TYPES, ".zip"], list(uploader.type)
    assert all(t in uploader.label for t in uploader.type), uploader.label


def test_a_link_without_data_says_its_settings_were_not_read():
    at = _page(budget="120", n_cores="7")
    said = [w.value for w in at.warning]
    assert len(said) == 1 and "budget=120, n_cores=7" in said[0] and "no data= parameter" in said[0], said
    assert _shown(at, "Selected") == 90


def test_the_link_warning_stays_until_dismissed_or_a_setting_changes():
    """It went on the next rerun, such as the one the background map makes when it arrives."""
    at = _page(data="digits", method="magic")
    link = [w.value for w in at.warning if "link" in w.value]
    assert len(link) == 1 and "method = 'magic'" in link[0]
    at.run()
    assert [w.value for w in at.warning if "link" in w.value] == link
    at.button(key="dismiss_link_warning").click().run()
    assert not any("link" in w.value for w in at.warning)
    at = _page(data="digits", method="magic")
    at.slider(key="removal_ratio").set_value(0.3)
    _select(at)
    assert not any("link" in w.value for w in at.warning)


def test_compare_names_a_rows_seed_and_denoiser_where_they_differ_from_the_select_page():
    """Two rows differing by seed read the same ("bilaf K=5 Prm=0.1 δ=1.1")."""
    from studio.state import compare_setting, select_defaults

    base = select_defaults(1797)
    row = {"method": "bilaf", "n_cores": "5", "removal_ratio": 0.1, "opponent_penalty": 1.1, "denoise": "idc"}
    assert compare_setting(base, {**row, "seed": 0.0})[1] == "bilaf K=5 Prm=0.1 δ=1.1"
    assert compare_setting(base, {**row, "seed": 3.0})[1] == "bilaf K=5 Prm=0.1 δ=1.1 seed=3"
    assert compare_setting(base, {**row, "denoise": "none", "seed": None})[1] == "bilaf K=5 Prm=0.1 δ=1.1 denoise=none"
    assert compare_setting(base, {"method": "activeft", "denoise": "none", "seed": 3})[1] == "activeft seed=3"
    assert compare_setting({**base, "seed": 3}, {"method": "activeft", "seed": 3})[1] == "activeft"


def test_compare_says_which_rows_are_the_same_setting_and_compares_it_once():
    """Rows 3 and 4 both set to bilaf with the same cells were computed and drawn twice,
    under the same name, without a word."""
    from studio.session import pool_key
    from studio.state import Source

    FIVE, AUTO = "bilaf K=5 Prm=0.1 δ=1.1", "bilaf K=auto Prm=0.1 δ=1.1"
    at = _page("views/compare.py")
    key = f"compare_settings_{pool_key(Source())}"
    at.session_state[key] = {"edited_rows": {0: {"n_cores": "5"}, 2: {"method": "bilaf"}, 3: {"method": "bilaf"}},
                             "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.run()  # the rows whose method became bilaf come back with their cells (the page's own rerun)
    assert not at.exception, [e.value for e in at.exception]
    said = [w.value for w in at.warning]
    assert said == ["Rows 3 and 4 are the same setting (bilaf K=auto Prm=0.1 δ=1.1): compared once."], said
    assert at.dataframe[-1].value["setting"].tolist() == [FIVE, "activeft", AUTO]
    assert [m.value for m in at.markdown if m.value.startswith("**")][:3] == [f"**{FIVE}**", "**activeft**",
                                                                              f"**{AUTO}**"]


def test_the_allowed_folders_are_named_once_each_in_their_order(tmp_path, monkeypatch):
    """A folder given twice in BILAF_ALLOWED_ROOTS (or also one of the app's own) was listed
    twice in the message that refuses a path outside them."""
    import os

    from studio.state import check_allowed

    extra, other = tmp_path / "extra", tmp_path / "other"
    monkeypatch.setenv("BILAF_ALLOWED_ROOTS", os.pathsep.join(map(str, (extra, other, extra, Path.home()))))
    with pytest.raises(ValueError) as refused:
        check_allowed("/etc")
    listed = str(refused.value).split("(", 1)[1].split(")", 1)[0].split(", ")
    assert len(listed) == len(set(listed)), listed
    assert listed.index(str(extra)) < listed.index(str(other)), listed
    assert listed[0] == str(Path.home()), listed  # the app's own first, as before
