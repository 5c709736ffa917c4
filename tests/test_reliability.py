"""Issue 6: bad input through the library, the command line and the app; faults (kills,
disk full, concurrent sessions); untrusted files. Each bad case must end in one clear
message: a ValueError in the library, ``error: ...`` and exit 2 on the command line,
an ``st.error`` (and no exception) in the app."""

import errno
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_app import shown

from conftest import CIFAR_IMAGES
from bilaf_core import select
from bilaf_core.cli import main
from bilaf_core.data import extract_image_zip, load_pool
from bilaf_core.features import load_feature_file
from bilaf_core.store import RunStore, StoreError

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
RNG = np.random.default_rng(0)
X = RNG.standard_normal((60, 8)).astype(np.float32)


def _with(rows, value):
    out = X.copy()
    out[rows] = value
    return out


# --- feature matrices ----------------------------------------------------------------
BAD_FEATURES = {
    "empty": (np.empty((0, 8), np.float32), "is empty"),
    "1-D": (X[:, 0], "must be 2-D"),
    "NaN": (_with(3, np.nan), "NaN or infinite values in 1 row(s), first at row 3"),
    "Inf": (_with(5, np.inf), "NaN or infinite"),
    "3-D": (X.reshape(6, 10, 8), "must be 2-D"),
}
#: Degenerate but valid: each must give a valid selection (budget, K).
ODD_FEATURES = {
    "all identical rows": (np.ones((40, 8), np.float32), 10, 3),
    "N = 1": (X[:1], 1, 1),
    "N < k_neighbors": (X[:6], 6, 2),
    "d = 1": (X[:, :1].copy(), 12, 3),
    "float16": (X.astype(np.float16), 12, 3),
    "float64": (X.astype(np.float64), 12, 3),
}


@pytest.mark.parametrize("name", BAD_FEATURES)
def test_bad_features_library_and_cli(name, tmp_path, capsys):
    features, fragment = BAD_FEATURES[name]
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        select(features, 5, core_method="random", random_state=0)
    path = tmp_path / "f.npy"
    np.save(path, features)
    code = main(["select", "--features", str(path), "--budget", "5", "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("error: ") and fragment in err


@pytest.mark.parametrize("name", ODD_FEATURES)
def test_degenerate_features_still_select(name, tmp_path, capsys):
    features, budget, k = ODD_FEATURES[name]
    for variant in ("paper", "reference"):
        result = select(features, budget, n_cores=k, core_method="kmeans", variant=variant, random_state=0)
        assert result.indices.size == budget and np.unique(result.indices).size == budget
    path = tmp_path / "f.npy"
    np.save(path, features)
    assert main(["select", "--features", str(path), "--budget", str(budget), "--n-cores", str(k),
                 "--core-method", "kmeans", "--out", str(tmp_path / "s.json")]) == 0
    assert len(json.loads((tmp_path / "s.json").read_text())["indices"]) == budget


def test_memory_mapped_two_gigabyte_file_is_streamed_not_copied(tmp_path):
    """A 2 GB .npy (sparse on disk) is validated block by block and kept memory-mapped:
    the process's own (anonymous) memory stays far below the file's size. Pages of the
    mapped file itself count as file-backed, which the kernel can drop at will."""
    path = tmp_path / "big.npy"
    rows = 2 * 1024**3 // (256 * 4)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, 256))
    array[-1] = 1.0
    del array
    code = f"""
        from bilaf_core.features import load_feature_file
        fs = load_feature_file({str(path)!r})
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        print(fs.features.shape[0], type(fs.features).__name__, status["RssAnon"].split()[0])
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    n, kind, anonymous_kb = out.stdout.split()
    assert int(n) == rows and kind == "memmap"
    assert int(anonymous_kb) < 600_000, f"{int(anonymous_kb) / 1024:.0f} MB of process memory for a 2 GB file"


# --- parameters on the command line ----------------------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["--budget", "0"], "budget must be in [1, 60]"),
    (["--budget", "61"], "budget must be in [1, 60]"),
    (["--budget", "5", "--n-cores", "6"], "budget must be at least n_cores"),
    (["--budget", "10", "--removal-ratio", "1.0"], "removal_ratio must be in [0, 1)"),
    (["--budget", "10", "--removal-ratio", "-0.1"], "removal_ratio must be in [0, 1)"),
    (["--budget", "10", "--include-ratio", "0"], "include_ratio must be in (0, 1]"),
    (["--budget", "10", "--k-neighbors", "0"], "k_neighbors must be an integer >= 1"),
    (["--budget", "10", "--opponent-penalty", "0.5"], "opponent_penalty must be >= 1.0"),
    (["--budget", "10", "--seed", "1.5"], "invalid int value: '1.5'"),
    (["--budget", "10", "--method", "magic"], "invalid choice: 'magic'"),
    (["--budget", "10", "--variant", "v9"], "invalid choice: 'v9'"),
    (["--budget", "10", "--denoise", "dbscan"], "invalid choice: 'dbscan'"),
    (["--budget", "ten"], "invalid int value: 'ten'"),
])
def test_bad_parameters_on_the_command_line(args, fragment, tmp_path, capsys):
    path = tmp_path / "f.npy"
    np.save(path, X)
    code = main(["select", "--features", str(path), "--out", str(tmp_path / "s.json"), "--core-method", "random", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and fragment in err and err.count("\n") == 1


def test_k_equal_to_n_is_valid(tmp_path):
    assert select(X[:12], 12, n_cores=12, core_method="random", random_state=0).indices.size == 12


# --- untrusted files -----------------------------------------------------------------
def _pickled(path):
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def _truncated(path):
    buffer = io.BytesIO()
    np.savez(buffer, features=X)
    path.write_bytes(buffer.getvalue()[:300])


@pytest.mark.parametrize("maker,suffix,fragment", [
    (_pickled, ".npy", "holds Python objects"),
    (_truncated, ".npz", "truncated"),
    (lambda p: p.write_bytes(b""), ".npy", "features.npy is not a .npy file"),
    (lambda p: p.write_text("id,x\n1,2\n"), ".npz", "features.npz is not a .npz file"),
    (lambda p: np.savez(p, other=X), ".npz", "has no 'features' or 'train_features' array"),
    (lambda p: np.savez(p, features=X, labels=np.arange(3)), ".npz", "labels has 3 entries but features has 60 rows"),
    (lambda p: p.write_text("x"), ".csv", "must be .npy, .npz or .parquet"),
])
def test_untrusted_feature_files_library_cli_and_app(maker, suffix, fragment, tmp_path, monkeypatch, capsys):
    path = tmp_path / f"features{suffix}"
    maker(path)
    with pytest.raises(ValueError, match=fragment):
        load_feature_file(path)
    if suffix != ".csv":
        code = main(["select", "--features", str(path), "--budget", "5", "--out", str(tmp_path / "s.json")])
        assert code == 2 and capsys.readouterr().err.startswith("error: ")
    monkeypatch.setenv("BILAF_START_FEATURES", str(path))  # a session that starts on this file
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert any(fragment in e.value and "Choose another one on the Data page" in e.value for e in at.error)


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in entries:
            if name.endswith("@link"):
                info = zipfile.ZipInfo(name[:-5])
                info.external_attr = (0o120777 << 16)
                bundle.writestr(info, data)
            else:
                bundle.writestr(name, data)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("entries,fragment", [
    ([("ok/a.png", "PNG"), ("../evil.png", "PNG")], "outside the target folder"),
    ([("/etc/evil.png", "PNG")], "outside the target folder"),
    ([("cats/../../evil.png", "PNG")], "outside the target folder"),
    ([("link.png@link", "/etc/passwd")], "symbolic link"),
    ([("notes.txt", "hello")], "holds no images"),
])
def test_zip_upload_entries_cannot_escape(entries, fragment, tmp_path):
    archive = tmp_path / "upload.zip"
    _zip(archive, [(n, _png() if d == "PNG" else d) for n, d in entries])
    target = tmp_path / "sandbox" / "out"
    with pytest.raises(ValueError, match=fragment):
        extract_image_zip(archive, target)
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "sandbox" / "evil.png").exists()
    assert not target.exists() or not any(target.rglob("*"))  # refused before anything was written


def test_zip_upload_limits_and_a_good_archive(tmp_path):
    archive = tmp_path / "upload.zip"
    _zip(archive, [(f"{c}/{i}.png", _png()) for c in ("cats", "dogs") for i in range(3)] + [("readme.txt", "x")])
    with pytest.raises(ValueError, match="more than the 4 allowed"):
        extract_image_zip(archive, tmp_path / "a", max_files=4)
    with pytest.raises(ValueError, match="unpacks to"):
        extract_image_zip(archive, tmp_path / "b", max_bytes=100)
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="cannot read the zip"):
        extract_image_zip(tmp_path / "broken.zip", tmp_path / "c")
    pool = load_pool("folder", root=extract_image_zip(archive, tmp_path / "good"))
    assert len(pool) == 6 and pool.class_names == ("cats", "dogs")


def test_odd_file_names_load_and_export(tmp_path):
    from bilaf_core.export import selection_table, to_csv
    from bilaf_core.features import extract_features, load_backbone

    root = tmp_path / "odd"
    root.mkdir()
    names = ["line\nbreak.png", "tab\there.png", "ünïcödé.png", "plain.png"]
    for i, name in enumerate(names):
        Image.new("RGB", (8, 8), (50 * i, 0, 0)).save(root / name)
    raw = os.fsencode(root) + b"/bad-\xff-bytes.png"  # not valid UTF-8
    with open(raw, "wb") as handle:
        handle.write(_png())
    pool = load_pool("folder", root=root)
    assert len(pool) == 5
    features = extract_features(pool, load_backbone("pixels"), cache_dir=tmp_path / "cache")
    result = select(features.features, 3, n_cores=1, core_method="random", random_state=0)
    table = selection_table(result, features.ids, features.labels)
    import pandas as pd

    back = pd.read_csv(io.StringIO(to_csv(table)), keep_default_na=False)
    assert sorted(back["id"]) == sorted(str(i) for i in features.ids[result.indices])


def test_upload_size_is_limited_by_the_server_config():
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    assert 'address = "localhost"' in config and "maxUploadSize = 400" in config


# --- the store -----------------------------------------------------------------------
def test_store_locked_by_another_writer_says_so(tmp_path):
    import sqlite3

    path = tmp_path / "runs.sqlite"
    RunStore(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="is locked by another writer"):
            RunStore(path, timeout=0.3).add_selection(dataset="d", backbone="b", params={}, indices=np.array([1]),
                                                      sample_ids=None, n_pool=2)
        assert RunStore(path, timeout=0.3).selections() == []  # reading still works (WAL)
    finally:
        holder.execute("ROLLBACK")


# --- faults --------------------------------------------------------------------------
def _spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-u", "-c", textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _wait_for(process: subprocess.Popen, marker: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if marker in line:
            return
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"never saw {marker!r}")


def test_extraction_killed_midway_resumes_and_leaves_no_half_written_file(tmp_path):
    code = f"""
        import numpy as np
        from bilaf_core.data import load_pool
        from bilaf_core.features import extract_features, load_backbone
        pool = load_pool("cifar10", root={str(CIFAR_IMAGES)!r})
        subset = pool.__class__(pool.name, pool.ids[:96], pool.labels[:96], pool.class_names, "kill-test",
                                pool.load_image)
        backbone = load_backbone("tf_efficientnet_lite0", device="cpu", random_init=True)
        def progress(fraction, message):
            if "saved" in message:
                print("SAVED", message, flush=True)
        extract_features(subset, backbone, cache_dir={str(tmp_path)!r}, chunk_size=16, batch_size=8, num_workers=0,
                         progress=progress)
        print("DONE", flush=True)
    """
    victim = _spawn(code)
    _wait_for(victim, "SAVED")
    _wait_for(victim, "SAVED")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert not (folder / "features.npy").exists()
    for chunk in folder.glob("chunk_*.npz"):  # every chunk on disk is complete
        with np.load(chunk) as data:
            assert data["features"].shape[0] == 16
    survivor = _spawn(code)
    lines = survivor.communicate(timeout=300)[0].splitlines()
    saved_again = [line for line in lines if line.startswith("SAVED")]
    assert lines[-1] == "DONE" and len(saved_again) < 6  # resumed: not every chunk again
    assert sorted(p.name for p in folder.iterdir()) == ["features.npy", "meta.json"]  # no .tmp, no chunks


def test_finetuning_killed_midway_is_marked_failed_and_resumes(tmp_path):
    selection = tmp_path / "sel.json"
    pool = load_pool("cifar10", root=CIFAR_IMAGES)
    indices = np.concatenate([np.flatnonzero(pool.labels == c)[:5] for c in range(3)])
    selection.write_text(json.dumps({"indices": indices.tolist()}))
    store_path = tmp_path / "runs.sqlite"
    command = [sys.executable, "-u", "-m", "bilaf_core", "finetune", "--dataset", "cifar10", "--root",
               str(CIFAR_IMAGES), "--selection", str(selection), "--epochs", "40",
               "--image-size", "32", "--batch-size", "5", "--eval-limit", "10", "--checkpoint-dir", str(tmp_path / "ck"),
               "--store", str(store_path)]
    victim = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 240
    while not list((tmp_path / "ck").glob("*/last.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    (run,) = RunStore(store_path).runs()
    assert run["status"] == "failed" and "killed or crashed" in run["error"]
    command[command.index("--epochs") + 1] = "40"
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-500:]
    result = json.loads(done.stdout)
    assert result["resumed_from_epoch"] >= 1 and len(result["history"]) == 40
    statuses = sorted(r["status"] for r in RunStore(store_path).runs())
    assert statuses == ["completed", "failed"]


@pytest.mark.parametrize("writer", ["selection", "feature chunk", "export"])
def test_disk_full_gives_a_clear_error_and_keeps_the_previous_file(writer, tmp_path, monkeypatch):
    from bilaf_core import _io
    from bilaf_core.export import selection_table, to_csv

    result = select(X, 10, n_cores=2, core_method="random", random_state=0)
    target = tmp_path / "out.json"
    result.save(target)
    before = target.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io.os, "fsync", full)
    expected = "no space left on the device" + ("" if writer == "feature chunk" else ".*previous .* is unchanged")
    with pytest.raises(ValueError, match=expected):
        if writer == "selection":
            select(X, 12, n_cores=2, core_method="random", random_state=1).save(target)
        elif writer == "export":
            _io.atomic_write_text(target, to_csv(selection_table(result, np.arange(60).astype(str), None)))
        else:
            from bilaf_core.features import extract_features, load_backbone

            extract_features(load_pool("digits"), load_backbone("pixels"), cache_dir=tmp_path / "cache")
            raise AssertionError("unreachable")  # pragma: no cover
    if writer != "feature chunk":
        assert target.read_bytes() == before
    assert not list(tmp_path.rglob(".*.tmp"))  # no half-written file left behind


def test_disk_full_in_the_cli_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    from bilaf_core import _io

    path = tmp_path / "f.npy"
    np.save(path, X)
    monkeypatch.setattr(_io.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    code = main(["select", "--features", str(path), "--budget", "5", "--core-method", "random",
                 "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert code == 2 and "no space left on the device" in err and err.count("error:") == 1


def test_two_app_sessions_selecting_at_once_keep_their_own_selections():
    sessions = [AppTest.from_file(APP, default_timeout=180) for _ in range(2)]
    for at in sessions:
        at.run()
    sessions[0].number_input(key="budget").set_value(40)
    sessions[1].number_input(key="budget").set_value(70)
    sessions[1].slider(key="removal_ratio").set_value(0.3)
    threads = [threading.Thread(target=lambda at=at: at.button[0].click().run()) for at in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [shown(at, "Selected") for at in sessions] == [40, 70]  # nothing crossed over
    assert [at.slider(key="removal_ratio").value for at in sessions] == [0.1, 0.3]
    assert not any(at.exception for at in sessions)


def test_app_on_a_single_sample_feature_file(tmp_path, monkeypatch):
    path = tmp_path / "one.npy"
    np.save(path, X[:1])
    monkeypatch.setenv("BILAF_START_FEATURES", str(path))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert shown(at, "Selected") == 1


def test_no_eval_or_shell_in_the_code():
    for file in [*ROOT.glob("bilaf_core/*.py"), *ROOT.glob("studio/*.py"), *ROOT.glob("views/*.py"), ROOT / "app.py"]:
        text = file.read_text()
        for forbidden in ("eval(", "exec(", "shell=True", "os.system(", "pickle.load", "allow_pickle=True"):
            assert forbidden not in text.replace("model.eval(", "").replace(".eval()", ""), (file, forbidden)


def test_uploaded_zip_unpacks_once_beside_it_and_a_bad_one_leaves_nothing(tmp_path):
    from studio.state import unpacked_zip

    good = tmp_path / "abc.zip"
    _zip(good, [("cats/1.png", _png()), ("dogs/2.png", _png())])
    folder = unpacked_zip(good)
    assert folder == tmp_path / "abc" and len(load_pool("folder", root=folder)) == 2
    (folder / "cats" / "1.png").unlink()
    assert unpacked_zip(good) == folder and not (folder / "cats" / "1.png").exists()  # not unpacked again
    bad = tmp_path / "bad.zip"
    _zip(bad, [("../escape.png", _png())])
    with pytest.raises(ValueError, match="outside the target folder"):
        unpacked_zip(bad)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "escape.png").exists()


@pytest.mark.parametrize("problem", ["read-only", "locked"])
def test_app_with_a_read_only_or_locked_store_says_so_and_offers_a_new_one(problem, tmp_path, monkeypatch):
    import sqlite3

    path = tmp_path / "runs.sqlite"
    RunStore(path).add_selection(dataset="digits", backbone="pixels", params={"method": "bilaf"},
                                 indices=np.array([1, 2]), sample_ids=None, n_pool=10)
    monkeypatch.setenv("BILAF_STORE", str(path))
    holder = None
    if problem == "read-only":  # as root, permissions do not stop writes: open the file read-only
        connect = sqlite3.connect
        monkeypatch.setattr(sqlite3, "connect", lambda p, **kw: connect(f"file:{p}?mode=ro", uri=True, **kw))
    else:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    try:
        at = AppTest.from_file(APP, default_timeout=120)
        at.switch_page("views/finetune.py").run()
        assert not at.exception
        expected = "cannot be written" if problem == "read-only" else "locked by another writer"
        assert any(expected in w.value for w in at.warning), [w.value for w in at.warning]
        assert at.button(key="new_store") is not None
    finally:
        if holder is not None:
            holder.execute("ROLLBACK")


def test_a_weights_file_that_is_not_a_checkpoint_says_so_by_name(tmp_path):
    """It said "cannot read weights file ...: 101" (the unpickler's complaint about byte 'e')."""
    from bilaf_core.features import _read_state_dict

    weights = tmp_path / "dino weights.pth"
    weights.write_text("e not a checkpoint")
    with pytest.raises(ValueError, match=r"dino weights.pth: it is not a PyTorch checkpoint") as raised:
        _read_state_dict(weights)
    # A newcomer saw torch's whole complaint pasted after it, advising weights_only=False
    assert "weights_only" not in str(raised.value) and len(str(raised.value)) < 200, raised.value
    with pytest.raises(ValueError, match=r"is a folder, not a weights file"):  # it said "not found"
        _read_state_dict(tmp_path)
