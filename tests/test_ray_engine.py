"""The Ray engine of feature extraction (issue 17), offline, on a real two-node cluster.

A head and one more worker node are started with ``ray start`` on 127.0.0.1 (separate
processes, token authentication, no dashboard, no usage reporting) for this module and
stopped at its end (only those processes: each ``ray start --block`` is terminated, which
stops what it started; never ``ray stop``, which would end every Ray process of the user).
The images are the 300 real CIFAR-10 training images of tests/data and a folder with
broken images; the backbone is the bundled pretrained EfficientNet-Lite0. Chunks of 40
images make resume observable."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import CIFAR_IMAGES

ray = pytest.importorskip("ray", reason="the Ray engine needs ray (pip install \"ray[data]\")")

from ray._private.authentication_test_utils import reset_auth_token_state  # noqa: E402

from bilaf_core.data import Pool, load_pool  # noqa: E402
from bilaf_core.features import extract_features, load_backbone  # noqa: E402
from test_features import _write_image_folder  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray's own, about its own settings

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 40
RESUMED = 160  # images of the resumed run: 4 chunks
ATOL = 1e-5  # issue 17: max abs difference to the local engine on the CPU


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_node(arguments: list[str], log: Path, env: dict) -> subprocess.Popen:
    """``ray start ... --block`` in its own process group; returns once the node runs."""
    handle = open(log, "w")
    node = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", *arguments, "--block"],
                            stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 90
    while "Ray runtime started" not in log.read_text():
        if node.poll() is not None or time.monotonic() > deadline:
            node.kill()
            pytest.fail(f"ray start {' '.join(arguments)} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    return node


def _stop_node(node: subprocess.Popen) -> None:
    os.killpg(node.pid, signal.SIGTERM)  # 'ray start --block' stops the processes it started
    try:
        node.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The head's address (HOST:PORT) of a local two-node cluster; this process and its
    children hold the cluster's token for the module's duration."""
    logs = tmp_path_factory.mktemp("ray-logs")
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"}
    saved = {name: os.environ.get(name) for name in token}
    os.environ.update(token)
    reset_auth_token_state()  # Ray's configuration of this process reads the token now
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # stop at once
    port = _free_port()
    nodes = [_start_node(["--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
                          "--include-dashboard=false", "--disable-usage-stats"], logs / "head.log", env)]
    try:
        nodes.append(_start_node(["--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                                  "--num-cpus", "2"], logs / "worker.log", env))
        yield f"127.0.0.1:{port}"
    finally:
        for node in reversed(nodes):
            _stop_node(node)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_auth_token_state()


@pytest.fixture(scope="module")
def pool():
    return load_pool("cifar10", root=CIFAR_IMAGES)  # 300 real training images


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("tf_efficientnet_lite0", device="cpu", notify=lambda message: None)


@pytest.fixture(scope="module")
def reference(pool, backbone, tmp_path_factory):
    """The local engine's features of the pool."""
    return extract_features(pool, backbone, cache_dir=tmp_path_factory.mktemp("local"), chunk_size=CHUNK,
                            batch_size=32)


def _first(pool: Pool, n: int) -> Pool:
    """The pool's first ``n`` images, as a pool of their own (rows 0..n-1 of the reference)."""
    return Pool(pool.name, pool.ids[:n], pool.labels[:n], pool.class_names, f"{pool.fingerprint}:first{n}",
                pool.load_image)


def _assert_same(result, expected):
    """Same rows, same order, same failures; features within ATOL (``expected`` may be longer)."""
    n = len(result.ids)
    assert list(result.ids) == list(expected.ids[:n]) and np.array_equal(result.kept, expected.kept[:n])
    assert result.failed == expected.failed
    difference = np.abs(np.asarray(result.features) - np.asarray(expected.features[:n])).max()
    assert difference <= ATOL, difference


def test_a_two_node_cluster_gives_the_local_engines_rows_into_the_same_cache(cluster, pool, backbone, reference,
                                                                              tmp_path):
    messages = []
    result = extract_features(pool, backbone, cache_dir=tmp_path, chunk_size=CHUNK, batch_size=32, engine="ray",
                              ray_address=cluster, progress=lambda fraction, message: messages.append((fraction, message)))
    _assert_same(result, reference)
    assert not result.from_cache and not ray.is_initialized()  # disconnected afterwards
    fractions = [fraction for fraction, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # fed from the job, never backwards
    assert any("/300 images (Ray: 2 model workers)" in message for _, message in messages)  # one per node
    assert sum("saved" in message for _, message in messages) == 8  # ceil(300 / 40) chunks
    again = extract_features(pool, backbone, cache_dir=tmp_path, chunk_size=CHUNK)  # the local engine: a cache hit
    assert again.from_cache and np.array_equal(np.asarray(again.features), np.asarray(result.features))


def test_unreadable_images_are_skipped_and_listed_as_the_local_engine_does(cluster, backbone, tmp_path, monkeypatch):
    from bilaf_core.cli import main

    root = tmp_path / "images"
    _write_image_folder(root)  # 9 readable images (gray, alpha, 16-bit among them), a truncated and an empty one
    folder = load_pool("folder", root=root)
    local = extract_features(folder, backbone, cache_dir=tmp_path / "local", chunk_size=4)
    monkeypatch.setenv("BILAF_CACHE_DIR", str(tmp_path / "ray"))
    out = tmp_path / "folder.npz"
    assert main(["features", "--dataset", "folder", "--root", str(root), "--backbone", "tf_efficientnet_lite0",
                 "--engine", "ray", "--ray-address", cluster, "--batch-size", "4", "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as written:
        assert list(written["ids"]) == list(local.ids)
        assert np.abs(written["features"] - np.asarray(local.features)).max() <= ATOL
    cached = extract_features(folder, backbone, cache_dir=tmp_path / "ray")  # what the CLI's run left in the cache
    assert cached.from_cache and cached.failed == local.failed
    assert sorted(i for i, _ in cached.failed) == ["cats/truncated.jpg", "dogs/empty.bmp"]


def _chunks_in(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("*/chunk_*.npz"))


def test_a_killed_driver_resumes_and_skips_the_finished_chunks(cluster, pool, backbone, reference, tmp_path):
    cache, first = tmp_path / "cache", _first(pool, RESUMED)
    # The driver stalls once its first chunk is saved (chunks are saved one by one in its
    # loop), so the kill always lands with work left: polling alone raced with the last
    # batches, which can finish every chunk within one poll (CI saw 4 of 4 saved).
    script = textwrap.dedent(f"""
        import time
        from bilaf_core.data import Pool, load_pool
        from bilaf_core.features import extract_features, load_backbone
        pool = load_pool("cifar10", root={str(CIFAR_IMAGES)!r})
        first = Pool(pool.name, pool.ids[:{RESUMED}], pool.labels[:{RESUMED}], pool.class_names,
                     {first.fingerprint!r}, pool.load_image)
        extract_features(first,
                         load_backbone("tf_efficientnet_lite0", device="cpu", notify=lambda m: None),
                         cache_dir={str(cache)!r}, chunk_size={CHUNK}, batch_size=32, engine="ray",
                         ray_address={cluster!r}, progress=lambda f, m: time.sleep(3600) if "saved" in m else None)
    """)
    log = tmp_path / "driver.log"
    with open(log, "w") as output:
        driver = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    while not _chunks_in(cache):
        assert driver.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no chunk within 120 s"
        time.sleep(0.2)
    driver.kill()  # SIGKILL: no cleanup of any kind
    driver.wait()
    finished = _chunks_in(cache)
    assert len(finished) == 1, finished
    saved = []
    resumed = extract_features(first, backbone, cache_dir=cache, chunk_size=CHUNK, batch_size=32, engine="ray",
                               ray_address=cluster, progress=lambda f, m: saved.append(m) if "saved" in m else None)
    recomputed = {f"chunk_{int(m.split('chunk ')[1].split('/')[0]) - 1:05d}.npz" for m in saved}
    assert recomputed and not recomputed & set(finished)  # finished chunks were skipped
    assert len(recomputed) + len(finished) == RESUMED // CHUNK
    _assert_same(resumed, reference)


def _embedder_pids() -> list[int]:
    """Processes of the model actors (Ray titles them after the class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"_Embedder" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_a_model_actor_killed_mid_run_is_restarted_and_the_run_completes(cluster, pool, backbone, reference,
                                                                        tmp_path):
    killed = []

    def kill_one_actor(fraction, message):
        if not killed and "images" in message and fraction < 0.7:
            victims = _embedder_pids()
            assert victims, "no model actor process found"
            os.kill(victims[0], signal.SIGKILL)
            killed.append(victims[0])

    ray.init(address=cluster)  # on a connection the caller made, which is used and left open
    try:
        result = extract_features(_first(pool, 120), backbone, cache_dir=tmp_path, chunk_size=CHUNK, batch_size=16,
                                  engine="ray", progress=kill_one_actor)
        assert ray.is_initialized()
        with pytest.raises(ValueError, match="already connected to Ray .*leave the address out"):
            extract_features(pool, backbone, cache_dir=tmp_path / "other", engine="ray", ray_address=cluster)
    finally:
        ray.shutdown()
    assert killed, "the run ended before an actor could be killed"
    _assert_same(result, reference)


def _silent_listener() -> socket.socket:
    """A port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


def test_an_address_that_does_not_answer_fails_within_seconds_saying_what_to_do(pool, backbone, tmp_path, capsys,
                                                                                 monkeypatch):
    from bilaf_core.cli import main

    with _silent_listener() as listener:
        silent = f"127.0.0.1:{listener.getsockname()[1]}"
        refused = f"127.0.0.1:{_free_port()}"
        for address, said in ((refused, f"no Ray cluster answers at {refused} \\(Connection refused\\)"),
                              (silent, f"{silent} accepts connections but no Ray head answers there within 8 s")):
            start = time.perf_counter()
            with pytest.raises(ValueError, match=f"{said}; .*ray start --head --port PORT.*leave the address empty"):
                extract_features(pool, backbone, cache_dir=tmp_path, engine="ray", ray_address=address)
            assert time.perf_counter() - start < 12 and not ray.is_initialized()
    assert main(["features", "--dataset", "cifar10", "--root", str(CIFAR_IMAGES), "--backbone", "tf_efficientnet_lite0",
                 "--engine", "ray", "--ray-address", f"127.0.0.1:{_free_port()}", "--out", str(tmp_path / "x.npz")]) == 2
    error = capsys.readouterr().err
    assert "error: no Ray cluster answers at 127.0.0.1:" in error and "Traceback" not in error
    monkeypatch.setenv("RAY_ADDRESS", dead := f"127.0.0.1:{_free_port()}")  # as inside a Ray job: its cluster
    with pytest.raises(ValueError, match=f"no Ray cluster answers at {dead}"):
        extract_features(pool, backbone, cache_dir=tmp_path, engine="ray")
    assert not list(tmp_path.glob("*/chunk_*"))


@pytest.mark.parametrize("auth, said", [({}, "requires token authentication: set RAY_AUTH_MODE=token"),
                                        ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"},
                                         "was refused: give the head's")])
def test_a_token_cluster_without_the_token_says_how_to_authenticate(cluster, auth, said):
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_AUTH")}
    probe = subprocess.run([sys.executable, "-c", f"from bilaf_core.ray_engine import _check_answers; "
                            f"_check_answers({cluster!r})"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env={**env, **auth, "PYTHONPATH": str(ROOT), "HOME": str(ROOT / "no-such-home")})
    assert probe.returncode == 1 and said in probe.stderr, probe.stderr[-2000:]


def test_options_the_cluster_cannot_serve_are_refused_before_any_work(cluster, pool, backbone, tmp_path):
    for options, said in (({"num_workers": 4}, "has 4 CPU.*leave none to decode.*at most 3"),
                          ({"gpus_per_worker": 1}, "has 0 GPU.*--gpus-per-worker 0")):
        with pytest.raises(ValueError, match=said):
            extract_features(pool, backbone, cache_dir=tmp_path, engine="ray", ray_address=cluster, **options)
        assert not ray.is_initialized()
    assert not _chunks_in(tmp_path)


def test_bad_options_are_refused_with_what_to_do(pool, backbone, tmp_path, monkeypatch):
    cases = [
        ({"engine": "spark"}, "engine must be one of"),
        ({"ray_address": "10.0.0.5:6379"}, "apply to the Ray engine only; pass engine='ray'"),
        ({"engine": "ray", "ray_address": "10.0.0.5"}, "a Ray address is HOST:PORT"),
        ({"engine": "ray", "ray_address": "ray://10.0.0.5:10001"}, "Ray Client address"),
        ({"engine": "ray", "ray_address": "10.0.0.5:99999"}, r"\(its port, 99999, is outside 1 to 65535\)"),
        ({"engine": "ray", "num_workers": 0}, "workers .* must be an integer >= 1"),
        ({"engine": "ray", "gpus_per_worker": -1}, "gpus_per_worker must be a number >= 0"),
    ]
    for options, said in cases:
        with pytest.raises(ValueError, match=said):
            extract_features(pool, backbone, cache_dir=tmp_path, **options)
    with pytest.raises(ValueError, match="pixels backbone has no model to distribute"):
        extract_features(pool, load_backbone("pixels"), cache_dir=tmp_path, engine="ray")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(ValueError, match=r"needs Ray Data: pip install \"ray\[data\]"):
        extract_features(pool, backbone, cache_dir=tmp_path, engine="ray")
    assert not list(tmp_path.iterdir())


def test_the_data_page_says_which_address_does_not_answer_and_what_to_do(browser, tmp_path):
    from playwright.sync_api import expect

    from browser import LONG, choose, go, streamlit_server, wait_idle

    root = tmp_path / "images"
    _write_image_folder(root)
    dead = f"127.0.0.1:{_free_port()}"
    with streamlit_server(tmp_path / "cache", tmp_path / "streamlit.log", BILAF_ALLOWED_ROOTS=str(root)) as url:
        page = browser.page(height=1700)
        page.goto(url)
        go(page, "Data", "Data")
        choose(page, "Source", "Image folder")
        page.get_by_role("textbox", name="Folder (local copy").fill(str(root))
        choose(page, "Backbone", "EfficientNet-Lite0 (bundled ImageNet weights, offline)")
        page.get_by_text("Ray (a cluster, or a local Ray runtime)", exact=True).click()
        page.get_by_role("textbox", name="Ray cluster address").fill(dead)
        page.get_by_role("button", name="Load and extract features").click()
        error = page.locator('[data-testid="stAlertContentError"]').first
        expect(error).to_contain_text(f"no Ray cluster answers at {dead}", timeout=LONG)
        expect(error).to_contain_text("ray start --head --port PORT")
        wait_idle(page)
        assert not browser.errors and page.locator('[data-testid="stException"]').count() == 0
