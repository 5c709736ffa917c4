"""Issue 5: linear probe, k-NN, full finetuning, the SQLite run store and their CLI."""

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import CIFAR_IMAGES
from bilaf_core import select
from bilaf_core.cli import main
from bilaf_core.data import load_pool, read_label_csv
from bilaf_core.evaluate import evaluate, knn_accuracy, linear_probe
from bilaf_core.errors import Cancelled
from bilaf_core.finetune import FinetuneConfig, finetune
from bilaf_core.store import RunStore, StoreError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def cifar_features(shared_dir):
    """5,000 train and 2,000 test rows of the real CIFAR-10 EfficientNet-Lite0 features."""
    with np.load(shared_dir / "data" / "cifar10" / "cifar10_effl0_features.npz") as data:
        return (data["train_features"][:5000].astype(np.float32), data["train_labels"][:5000],
                data["test_features"][:2000].astype(np.float32), data["test_labels"][:2000])


@pytest.fixture(scope="module")
def cifar_pool():
    return load_pool("cifar10", root=CIFAR_IMAGES)  # 300 real training images from tests/data


# --- linear probe and k-NN -----------------------------------------------------------
def test_probes_beat_chance_and_a_degenerate_selection(cifar_features):
    x, y, xt, yt = cifar_features
    good = select(x, 200, method="kmeans", random_state=0).indices
    one_class = np.flatnonzero(y == 3)[:200]
    two_classes = np.concatenate([np.flatnonzero(y == 3)[:100], np.flatnonzero(y == 5)[:100]])
    knn_good = knn_accuracy(x[good], y[good], xt, yt)
    knn_bad = knn_accuracy(x[one_class], y[one_class], xt, yt)
    linear_good = linear_probe(x[good], y[good], xt, yt)
    linear_bad = linear_probe(x[two_classes], y[two_classes], xt, yt)
    assert knn_good.top1 > 0.5 and linear_good.top1 > 0.5  # chance is 0.1
    assert knn_bad.top1 == pytest.approx(np.mean(yt == 3))  # one class: always predicts it
    assert knn_good.top1 > knn_bad.top1 + 0.3 and linear_good.top1 > linear_bad.top1 + 0.3
    assert linear_good.classes_seen == 10 and knn_bad.classes_seen == 1


def test_knn_hand_checked():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    labels = np.array([0, 1, 1])
    # Query (1, 0) has cosine similarities 1, 0 and 0.994 to the three samples; a vote
    # weighs exp((s - 1) / T). k = 1: the identical sample, class 0. k = 3, T = 0.07:
    # class 0 gets 1.0, class 1 gets 0.917 + 6e-7, so class 0. T = 10: class 1 gets
    # 0.999 + 0.905 > 1.0, so class 1.
    q = np.array([[1.0, 0.0]])
    assert knn_accuracy(train, labels, q, np.array([0]), k=1).top1 == 1.0
    assert knn_accuracy(train, labels, q, np.array([0]), k=3, temperature=0.07).top1 == 1.0
    assert knn_accuracy(train, labels, q, np.array([1]), k=3, temperature=10.0).top1 == 1.0


def test_evaluate_without_test_split_uses_the_unselected_pool(cifar_features):
    x, y, _, _ = cifar_features
    result = evaluate(x[:600], y[:600], np.arange(100), protocol="knn")
    assert result.eval_split == "unselected pool" and result.n_eval == 500 and result.n_train == 100


@pytest.mark.parametrize("call,fragment", [
    (lambda x, y: linear_probe(x[:5], np.zeros(5, int), x, y), "only one class"),
    (lambda x, y: evaluate(x, y, [0, 1, 10_000]), "not in the pool of 600"),
    (lambda x, y: evaluate(x, y, [0, 1, 1]), "repeats samples"),
    (lambda x, y: evaluate(x, None, [0, 1]), "no labels"),
    (lambda x, y: evaluate(x, y, [0, 1], protocol="svm"), "protocol must be one of"),
    (lambda x, y: knn_accuracy(x[:5], y[:5], x[:, :3], y), "same backbone"),
    (lambda x, y: evaluate(x, y, np.arange(600)), "nothing is left to evaluate"),
])
def test_evaluation_bad_input_is_named(cifar_features, call, fragment):
    x, y = cifar_features[0][:600], cifar_features[1][:600]
    with pytest.raises(ValueError, match=fragment):
        call(x, y)


def test_label_csv(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("id,label\na.png,cat\nb.png,dog\nc.png,cat\nextra.png,dog\n")
    labels, names = read_label_csv(csv, ["c.png", "b.png"])
    assert labels.tolist() == [0, 1] and names == ("cat", "dog")
    assert read_label_csv(csv, ["b.png"], class_names=("bird", "dog", "cat"))[0].tolist() == [1]
    with pytest.raises(ValueError, match="no label for 1 selected sample"):
        read_label_csv(csv, ["a.png", "missing.png"])
    (tmp_path / "bad.csv").write_text("name,class\nx,1\n")
    with pytest.raises(ValueError, match="needs 'id' and 'label' columns"):
        read_label_csv(tmp_path / "bad.csv", ["x"])
    upload = io.BytesIO(b"name,class\nx,1\n")  # the app's upload: a file object with the user's file name
    upload.name = "my labels.csv"
    with pytest.raises(ValueError, match=r"^the label CSV my labels.csv needs 'id' and 'label' columns, found name, class$"):
        read_label_csv(upload, ["x"])


# --- full finetuning -----------------------------------------------------------------
FAST = FinetuneConfig(epochs=3, image_size=64, batch_size=8, eval_limit=60, warmup_epochs=1, random_state=0)


def _few_images(pool):
    return np.concatenate([np.flatnonzero(pool.labels == c)[:6] for c in range(4)])  # 24 real images, 4 classes


def test_finetune_loss_goes_down_and_is_reproducible(cifar_pool, tmp_path):
    indices = _few_images(cifar_pool)
    first = finetune(cifar_pool, indices, config=FAST, checkpoint_dir=tmp_path / "a")
    again = finetune(cifar_pool, indices, config=FAST, checkpoint_dir=tmp_path / "b")
    losses = [h["loss"] for h in first.history]
    assert losses[-1] < losses[0]
    assert [h["loss"] for h in again.history] == pytest.approx(losses, rel=1e-5)
    assert first.eval_split == "test" and first.n_eval == 60 and first.n_train == 24
    assert first.best_top1 == max(h["top1"] for h in first.history) and first.reported == "best"


def test_finetune_reports_each_evaluation_batch_and_its_fraction_moves(cifar_pool, tmp_path):
    """An epoch's evaluation reported once ("epoch N: evaluating on 1,708") and then sat
    ~150 s on CPU with the bar still: it reports after every batch, how far it is, and the
    fraction grows through it (so the page's bar moves and tells the time left)."""
    config = FinetuneConfig(epochs=2, image_size=32, batch_size=8, eval_limit=None, warmup_epochs=0)
    seen = []
    finetune(cifar_pool, _few_images(cifar_pool), config=config, checkpoint_dir=tmp_path,
             progress=lambda fraction, message: seen.append((fraction, message)))
    evaluating = [(f, m) for f, m in seen if "evaluating" in m]
    # the 100 test images in batches of 64 (max(batch_size, 64)): 0, 64, 100 per evaluated epoch
    assert [m for _, m in evaluating] == [f"epoch {e}: evaluating {k} of 100" for e in (1, 2) for k in (0, 64, 100)]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    first = [f for f, m in evaluating if m.startswith("epoch 1:")]
    assert first[-1] - first[0] > 0.05  # the evaluation's own share of the bar, not one fixed point
    assert 0 < fractions[0] < first[0] < 0.5


def test_finetune_resumes_after_interruption(cifar_pool, tmp_path):
    indices = _few_images(cifar_pool)
    batches = {"n": 0}

    def stop_in_second_epoch():
        batches["n"] += 1
        return batches["n"] > 4  # 3 batches per epoch: stops in epoch 2

    with pytest.raises(Cancelled):
        finetune(cifar_pool, indices, config=FAST, checkpoint_dir=tmp_path, should_stop=stop_in_second_epoch)
    resumed = finetune(cifar_pool, indices, config=FAST, checkpoint_dir=tmp_path)
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == FAST.epochs
    fresh = finetune(cifar_pool, indices, config=FAST, checkpoint_dir=tmp_path / "fresh")
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in fresh.history], rel=1e-5)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"indices": [0, 1, 10**7]}, "not in the pool"),
    ({"labels": np.zeros(24, dtype=int)}, "only one class"),
    ({"backbone": "pixels"}, "no weights to finetune"),
    ({"config": FinetuneConfig(epochs=0)}, "epochs must be an integer >= 1"),
])
def test_finetune_bad_input(cifar_pool, kwargs, fragment):
    arguments = {"indices": _few_images(cifar_pool), **kwargs}
    with pytest.raises(ValueError, match=fragment):
        finetune(cifar_pool, **arguments)


def test_finetune_unlabelled_pool_needs_labels(tmp_path):
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (40, 40), (60 * i, 0, 0)).save(tmp_path / f"{i}.png")
    pool = load_pool("folder", root=tmp_path)
    with pytest.raises(ValueError, match="has no labels; finetuning needs one"):
        finetune(pool, [0, 1])
    with pytest.raises(ValueError, match="no labelled test split"):
        finetune(pool, [0, 1], labels=np.array([0, 1]), config=FAST)


# --- the run store -------------------------------------------------------------------
def test_store_records_selections_and_every_outcome(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    selection_id = store.add_selection(dataset="digits", backbone="pixels", params={"method": "bilaf", "random_state": 3},
                                       indices=np.array([4, 2]), sample_ids=np.array(["a", "b"]), n_pool=10)
    with store.track(protocol="knn", params={"k": 20}, selection_id=selection_id) as run:
        run.metrics = {"top1": 0.5}
    with pytest.raises(RuntimeError), store.track(protocol="linear", params={}, selection_id=selection_id):
        raise RuntimeError("boom")
    with pytest.raises(Cancelled), store.track(protocol="finetune", params={}, selection_id=selection_id):
        raise Cancelled("Cancelled during epoch 3 of 10")

    class DownloadCancelled(RuntimeError):  # someone else's error: a name is not a cancellation
        pass

    with pytest.raises(DownloadCancelled), store.track(protocol="other", params={}, selection_id=selection_id):
        raise DownloadCancelled("network")
    runs = {row["protocol"]: row for row in RunStore(tmp_path / "runs.sqlite").runs()}
    assert runs["knn"]["status"] == "completed" and runs["knn"]["metrics"] == {"top1": 0.5}
    assert runs["linear"]["status"] == "failed" and runs["linear"]["error"] == "RuntimeError: boom"
    # a cancel is said in its own words: the type before them read "Cancelled: cancelled during ..."
    assert runs["finetune"]["error"] == "Cancelled during epoch 3 of 10"
    assert runs["finetune"]["status"] == "cancelled" and runs["other"]["status"] == "failed"
    assert runs["knn"]["method"] == "bilaf" and runs["knn"]["budget"] == 2 and runs["knn"]["seed"] == 3
    # the learning curve: completed runs with a top-1 only, per (protocol, method, budget)
    (row,) = store.learning_curve("digits")
    assert {k: row[k] for k in ("protocol", "method", "budget", "mean", "count")} == {
        "protocol": "knn", "method": "bilaf", "budget": 2, "mean": 0.5, "count": 1}
    assert np.isnan(row["std"]) and store.learning_curve("cifar10") == []
    with store.track(protocol="knn", params={"k": 20}, selection_id=selection_id) as run:
        run.metrics = {"top1": 0.7}
    (row,) = store.learning_curve("digits")
    assert row["mean"] == pytest.approx(0.6) and row["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert row["count"] == 2
    # the digits' runs on other features are not averaged in when the features are named
    other = store.add_selection(dataset="digits", backbone="tf_efficientnet_lite0", params={"method": "bilaf"},
                                indices=np.array([4, 2]), sample_ids=None, n_pool=10)
    with store.track(protocol="knn", params={"k": 20}, selection_id=other) as run:
        run.metrics = {"top1": 0.9}
    assert store.learning_curve("digits")[0]["count"] == 3
    (row,) = store.learning_curve("digits", "pixels")
    assert row["count"] == 2 and row["mean"] == pytest.approx(0.6)
    assert store.learning_curve("digits", "tf_efficientnet_lite0")[0]["mean"] == pytest.approx(0.9)
    saved = store.selection(selection_id)
    assert saved["sample_ids"] == ["a", "b"] and saved["indices"] == [4, 2] and "numpy" in saved["versions"]


def _python(code: str, path) -> subprocess.Popen:
    script = textwrap.dedent(code).replace("STORE", repr(str(path)))
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_store_survives_a_killed_writer(tmp_path):
    path = tmp_path / "runs.sqlite"
    RunStore(path)
    # A writer killed mid-transaction (lock held, rows written, no commit) and a run whose
    # process is killed while it is running.
    writer = _python("""
        import os, signal, sqlite3, time
        from bilaf_core.store import RunStore
        store = RunStore(STORE)
        store.start_run(protocol="finetune", params={})
        db = sqlite3.connect(STORE, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO selections (created, dataset, backbone, method, budget, n_pool, params, sample_ids,"
                   " indices, versions) VALUES (0, 'x', 'x', 'x', 1, 1, '{}', '[]', '[]', '{}')")
        print("ready", flush=True)
        time.sleep(60)
    """, path)
    assert writer.stdout.readline().strip() == "ready"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    store = RunStore(path)  # reopening reaps the dead process's run
    (run,) = store.runs()
    assert run["status"] == "failed" and "ended without finishing" in run["error"]
    assert store.selections() == []  # the uncommitted insert is gone, the file is sound
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_processes_write_at_once(tmp_path):
    path = tmp_path / "runs.sqlite"
    RunStore(path)
    code = """
        import numpy as np
        from bilaf_core.store import RunStore
        store = RunStore(STORE)
        for i in range(40):
            sid = store.add_selection(dataset="d", backbone="b", params={}, indices=np.array([i]), sample_ids=None, n_pool=50)
            with store.track(protocol="knn", params={}, selection_id=sid) as run:
                run.metrics = {"top1": i / 40}
    """
    writers = [_python(code, path) for _ in range(2)]
    assert all(w.wait(timeout=120) == 0 for w in writers)
    store = RunStore(path)
    assert len(store.selections()) == 80 and len(store.runs()) == 80
    assert {r["status"] for r in store.runs()} == {"completed"}


def test_store_corrupted_or_read_only_says_so(tmp_path, monkeypatch):
    corrupted = tmp_path / "corrupted.sqlite"
    corrupted.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a readable database.*choose another store path"):
        RunStore(corrupted)
    good = tmp_path / "runs.sqlite"
    RunStore(good)
    os.chmod(good, 0o444)
    if os.access(good, os.W_OK):  # root ignores permissions: let SQLite open the file read-only instead
        connect = sqlite3.connect
        monkeypatch.setattr(sqlite3, "connect", lambda path, **kw: connect(f"file:{path}?mode=ro", uri=True, **kw))
    with pytest.raises(StoreError, match="cannot be written.*choose another store path"):
        RunStore(good).add_selection(dataset="d", backbone="b", params={}, indices=np.array([1]), sample_ids=None,
                                     n_pool=2)


# --- command line --------------------------------------------------------------------
def test_cli_select_evaluate_finetune_runs_share_the_store(cifar_features, tmp_path, capsys, shared_dir):
    x, y, xt, yt = cifar_features
    features = tmp_path / "f.npz"
    np.savez(features, features=x, labels=y, test_features=xt, test_labels=yt,
             ids=np.array([f"cifar10/train/{i:05d}" for i in range(len(x))]))
    out = tmp_path / "sel.json"
    assert main(["select", "--features", str(features), "--budget", "24", "--method", "kmeans", "--seed", "0",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--features", str(features), "--selection", str(out), "--protocol", "knn"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["eval_split"] == "test" and result["n_eval"] == 2000 and result["top1"] > 0.3
    assert main(["finetune", "--dataset", "cifar10", "--root", str(shared_dir / "data" / "cifar10"), "--selection",
                 str(out), "--epochs", "1", "--image-size", "64", "--batch-size", "12", "--eval-limit", "40",
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    finetuned = json.loads(capsys.readouterr().out)
    assert finetuned["n_train"] == 24 and len(finetuned["history"]) == 1
    assert main(["runs"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("completed") == 2 and "finetune" in listing and "knn" in listing
    store = RunStore()
    assert len(store.selections()) == 1  # evaluate and finetune reuse the recorded selection


def test_cli_evaluate_and_finetune_bad_input(tmp_path, capsys):
    features = tmp_path / "f.npz"
    np.savez(features, features=np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32))
    selection = tmp_path / "sel.json"
    selection.write_text(json.dumps({"indices": [0, 1, 99]}))
    assert main(["evaluate", "--features", str(features), "--selection", str(selection)]) == 2
    assert "not in the pool of 30" in capsys.readouterr().err
    selection.write_text(json.dumps({"indices": [0, 1, 2]}))
    assert main(["evaluate", "--features", str(features), "--selection", str(selection)]) == 2
    assert "has no labels" in capsys.readouterr().err
    selection.write_text("{not json")
    assert main(["evaluate", "--features", str(features), "--selection", str(selection)]) == 2
    assert "cannot read selection" in capsys.readouterr().err
    selection.write_text(json.dumps({"indices": [0, 1], "ids": ["digits/00000", "nope/1"]}))
    assert main(["finetune", "--dataset", "digits", "--selection", str(selection)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 1 selected id(s) are not in digits") and err.count("\n") == 1


def test_finetune_says_which_backbone_it_trained_after_an_offline_fallback(cifar_pool, tmp_path, monkeypatch):
    """The run record kept the backbone asked for (DINO) when the weights could not be had
    offline and the bundled EfficientNet-Lite0 was trained instead."""
    from bilaf_core import features
    from bilaf_core.features import BUNDLED_BACKBONE, DEFAULT_BACKBONE

    monkeypatch.setattr(features, "network_available", lambda *a, **k: False)
    monkeypatch.setattr(features, "_cached_hub_weights", lambda name: False)
    started = []
    config = FinetuneConfig(epochs=1, image_size=32, batch_size=8, eval_limit=20, warmup_epochs=0, random_state=0)
    result = finetune(cifar_pool, _few_images(cifar_pool), backbone=DEFAULT_BACKBONE, config=config,
                      allow_fallback=True, checkpoint_dir=tmp_path, on_start=started.append)
    assert result.backbone == BUNDLED_BACKBONE and result.to_dict()["backbone"] == BUNDLED_BACKBONE
    assert "bundled" in result.weights
    assert started == [{"backbone": BUNDLED_BACKBONE, "weights": result.weights}]


def test_the_warm_up_a_run_spends_is_capped_below_its_epochs():
    """The one place of the cap (the Finetune page says it: 'warm-up is cut to 0')."""
    assert FinetuneConfig(epochs=1, warmup_epochs=99).warmup_used == 0
    assert FinetuneConfig(epochs=10, warmup_epochs=5).warmup_used == 5
