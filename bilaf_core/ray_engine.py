"""Feature extraction on Ray Data: the ``ray`` engine of :func:`bilaf_core.features.extract_features`.

The pool's image indices become a Ray Dataset of blocks; decoding and resizing (the
geometric half of the backbone's transform) run as CPU tasks that ship uint8 images; the
backbone runs in a pool of actors, one model each (on a GPU with ``gpus_per_worker``),
which standardise the pixels (the per-pixel half of the transform, on the device) and
embed them. The driver collects the rows by index into the same chunks, with the same
reasons for unreadable images, as the local engine, and
:func:`~bilaf_core.features.extract_features` writes them to the same fingerprinted cache
(so a cache hit, a resume and every reader work unchanged). A model actor that dies is
restarted by Ray and its batches retried (Ray Data's actor pools default to
``max_restarts=-1`` and ``max_task_retries=-1``; tests/test_ray_engine.py kills one).

``ray`` is imported only here, when this engine is used: ``pip install "ray[data]"``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from .data import Pool
from .features import Backbone, Progress, _chunk_indices, _embed, _environment, _normalised, _resized

__all__ = ["check_address", "check_options", "ray_chunks", "RAY_REQUIREMENT", "CONNECT_TIMEOUT_S"]

RAY_REQUIREMENT = "ray[data]>=2.60"
#: Seconds a cluster address has to answer (TCP, then the head's GCS) before it is given up.
CONNECT_TIMEOUT_S = 4.0


def check_options(backbone: Backbone, *, address: str | None, workers: int | None, gpus_per_worker: float) -> None:
    """Validate the Ray engine's options before anything runs (the cluster is checked later).

    Raises
    ------
    ValueError : the ``pixels`` backbone, an address that is not ``HOST:PORT`` or ``auto``,
        a worker count below 1, a negative GPU share; ray not installed (how to install it).
    """
    if backbone.model is None:
        raise ValueError("the pixels backbone has no model to distribute; use the local engine for it")
    if address is not None:
        _host_port(address)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers (model actors on the Ray cluster) must be an integer >= 1 or None (automatic), "
                         f"got {workers!r}")
    if isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, (int, float)) or not gpus_per_worker >= 0:
        raise ValueError(f"gpus_per_worker must be a number >= 0 (0: the models run on CPUs; 0.5: two models share "
                         f"a GPU), got {gpus_per_worker!r}")
    _import_ray()


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the extra the engine needs)
    except ImportError:
        raise ValueError(f"the Ray engine needs Ray Data: pip install \"{RAY_REQUIREMENT}\" (or use the local "
                         "engine)") from None
    return ray


def check_address(address: str) -> None:
    """Raise ValueError, saying why, unless ``address`` is a Ray head's ``HOST:PORT``
    (port 1 to 65535) or ``auto``; nothing is contacted."""
    _host_port(address)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``HOST:PORT`` address; None for ``auto``."""
    if address == "auto":
        return None
    if address.startswith("ray://"):
        raise ValueError(f"{address} is a Ray Client address; this engine connects as a driver to the head's GCS: "
                         "give HOST:PORT (what 'ray start --head' prints, port 6379 by default) and run where the "
                         "head's port is reachable")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        outside = f" (its port, {int(port)}, is outside 1 to 65535)" if host and port.isdigit() else ""
        raise ValueError(f"a Ray address is HOST:PORT (e.g. 10.0.0.5:6379, what 'ray start --head' prints) or "
                         f"'auto', got {address!r}{outside}")
    return host.strip("[]"), int(port)


def _check_answers(address: str) -> None:
    """Fail within about 2 x CONNECT_TIMEOUT_S unless a Ray head (its GCS) answers at
    ``address``; ``ray.init`` itself would retry for minutes."""
    host_port = _host_port(address)
    if host_port is None:
        return  # 'auto': ray.init finds a running cluster on this machine or says there is none
    what_to_do = ("start the cluster with 'ray start --head --port PORT' on the head machine, check the host and "
                  "port it printed, or leave the address empty to start a local Ray runtime")
    try:
        socket.create_connection(host_port, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or type(exc).__name__
        raise ValueError(f"no Ray cluster answers at {address} ({reason}); {what_to_do}") from None
    import threading

    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    outcome: list[BaseException | None] = []

    def ask() -> None:  # a client that cannot reach the GCS retries inside Ray's C++ core: give it a thread
        try:
            GcsClient(address=f"{host_port[0]}:{host_port[1]}").internal_kv_get(b"bilaf-probe", None,
                                                                               timeout=CONNECT_TIMEOUT_S)
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    probe = threading.Thread(target=ask, name="ray-head-probe", daemon=True)
    probe.start()
    probe.join(2 * CONNECT_TIMEOUT_S)
    if not outcome:
        raise ValueError(f"{address} accepts connections but no Ray head answers there within "
                         f"{2 * CONNECT_TIMEOUT_S:.0f} s; {what_to_do}")
    if isinstance(outcome[0], AuthenticationError):
        token = ("the token this machine holds (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) was "
                 "refused: give the head's ('ray get-auth-token' on the head prints it)"
                 if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else
                 "set RAY_AUTH_MODE=token and the head's token (RAY_AUTH_TOKEN=..., or the file ~/.ray/auth_token; "
                 "'ray get-auth-token' on the head prints it)")
        raise ValueError(f"the Ray cluster at {address} requires token authentication: {token}")
    if outcome[0] is not None:
        raise ValueError(f"{address} answers, but not as a Ray cluster's head ({outcome[0]}); give the port of "
                         f"the head's GCS (6379 unless 'ray start --head --port' chose another), not the "
                         f"dashboard's or the Ray Client's; {what_to_do}")


@contextlib.contextmanager
def _connected(ray, address: str | None) -> Iterator[None]:
    """This process connected to Ray for the extraction: an existing connection (left
    open), the cluster at ``address``, or a new local runtime (no dashboard, no usage
    statistics, workers' output kept off the console); closed afterwards."""
    if ray.is_initialized():
        if address is not None:
            raise ValueError(f"this process is already connected to Ray ({ray.get_runtime_context().gcs_address}); "
                             f"leave the address out to use that connection, or call ray.shutdown() before "
                             f"connecting to {address}")
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is not None:
        _check_answers(address)
    # the driver's bilaf_core goes to every worker (a remote cluster need not have it, nor a local one find it)
    options = {"runtime_env": {"py_modules": [str(Path(__file__).resolve().parent)]}, "log_to_driver": False,
               "logging_level": logging.ERROR}
    try:
        # The driver's core worker logs fatal errors only: Ray Data's actor pools make it print an error-level
        # warning about constructor arguments (ray-project/ray#53727) that does not apply here (the driver holds
        # them for the whole run). Failures still surface as exceptions.
        with _environment("RAY_BACKEND_LOG_LEVEL", "fatal"):
            if address is None:  # 'local': a new runtime, even where another cluster runs on this machine
                ray.init(address="local", include_dashboard=False, **options)
            else:
                ray.init(address=address, **options)
    except (ConnectionError, RuntimeError) as exc:
        raise ValueError(f"cannot connect to the Ray cluster at {address or 'a new local runtime'}: {exc}") from None
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)  # per-run notes ("execution finished", "progress bars disabled")
    try:
        yield
    finally:
        data_logger.setLevel(level)
        ray.shutdown()


def _plan(ray, workers: int | None, gpus_per_worker: float, address: str | None) -> tuple[int, int]:
    """(model actors, torch threads per actor) for the cluster's resources.

    Default: one actor per ``gpus_per_worker`` GPUs, else one per alive node; each CPU
    actor gets the cluster's CPUs divided among the actors as threads. At least one CPU
    is left for decoding."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    where = f"the Ray cluster at {address}" if address else "the local Ray runtime"
    if gpus_per_worker > 0:
        if gpus < gpus_per_worker:
            raise ValueError(f"{where} has {gpus:g} GPU(s), fewer than the {gpus_per_worker:g} asked per worker; "
                             f"use gpus_per_worker 0 (--gpus-per-worker 0) to run on CPUs, or a cluster with GPUs")
        workers = workers or max(1, int(gpus // gpus_per_worker))
        if workers * gpus_per_worker > gpus:
            raise ValueError(f"{workers} workers x {gpus_per_worker:g} GPU(s) need {workers * gpus_per_worker:g} GPUs; "
                             f"{where} has {gpus:g}: ask for fewer workers")
    workers = workers or len([node for node in ray.nodes() if node["Alive"]])
    if workers + 1 > cpus:
        raise ValueError(f"{where} has {cpus} CPU(s): {workers} model worker(s) of one CPU each would leave none to "
                         f"decode images; ask for at most {max(1, cpus - 1)} worker(s)")
    return workers, max(1, cpus // workers)


_POOLS: dict[str, Pool] = {}


def _pool_of(ref) -> Pool:
    """The pool behind object ``ref``, deserialised once per worker process (a folder
    pool's list of paths is large), not once per task."""
    import ray

    key = ref.hex()
    if key not in _POOLS:
        _POOLS.clear()
        _POOLS[key] = ray.get(ref)
    return _POOLS[key]


def _decode(batch: dict, *, pool: tuple, backbone: Backbone) -> dict:
    """A CPU task: {"data": indices} -> indices, (B, H, W, 3) uint8 images, reasons."""
    indices = np.asarray(batch["data"], dtype=np.int64)
    source = _pool_of(pool[0])  # in a tuple, so that Ray Data passes the reference, not the pool
    images, reasons = zip(*(_resized(source, int(i), backbone) for i in indices))
    return {"index": indices, "image": np.stack(images), "reason": np.array(reasons, dtype=str)}


class _Embedder:
    """A model actor: standardises a batch of uint8 images and embeds it."""

    def __init__(self, backbone: tuple, threads: int):
        import ray
        import torch

        torch.set_num_threads(threads)
        model = ray.get(backbone[0])
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.backbone = replace(model, model=model.model.to(device), device=device)

    def __call__(self, batch: dict) -> dict:
        import torch

        with torch.inference_mode():
            features = _embed(self.backbone, torch.from_numpy(_normalised(batch["image"], self.backbone)))
        return {"index": batch["index"], "features": features, "reason": batch["reason"]}


class _Chunks:
    """Rows arriving in any order (and, after a retry, possibly twice) gathered by index
    into whole chunks."""

    def __init__(self, chunks: list[int], chunk_size: int, n: int):
        self.chunk_size, self.n = chunk_size, n
        self.open: dict[int, list] = {}
        self.expected = {c: _chunk_indices(c, chunk_size, n).size for c in chunks}

    def add(self, index: np.ndarray, features: np.ndarray, reasons: np.ndarray) -> list[tuple[int, np.ndarray, list]]:
        """Store a batch of rows; return the chunks it completes as (chunk, features, reasons)."""
        finished = []
        for c in np.unique(index // self.chunk_size):
            rows = index // self.chunk_size == c
            size = self.expected[int(c)]
            if int(c) not in self.open:
                self.open[int(c)] = [np.zeros((size, features.shape[1]), np.float32), np.zeros(size, object),
                                     np.zeros(size, bool)]
            values, why, seen = self.open[int(c)]
            offsets = index[rows] - int(c) * self.chunk_size
            values[offsets], why[offsets], seen[offsets] = features[rows], reasons[rows], True
            if seen.all():
                del self.open[int(c)]
                finished.append((int(c), values, [str(r) for r in why]))
        return finished


def ray_chunks(pool: Pool, backbone: Backbone, chunks: list[int], *, chunk_size: int, batch_size: int,
               address: str | None, workers: int | None, gpus_per_worker: float,
               progress: Progress) -> Iterator[tuple[int, np.ndarray, list[str]]]:
    """Yield (chunk, features, reasons) for each of ``chunks`` as the Ray job finishes it.

    Connects to ``address`` (None: ``$RAY_ADDRESS`` when set, as inside a Ray job, else a
    new local runtime) only when there is work; reports
    ``progress`` per batch of rows received. Closing the generator (an interruption)
    disconnects, which ends the job's tasks and actors on the cluster.
    """
    if not chunks:
        return
    ray = _import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None  # inside a Ray job, RAY_ADDRESS names its cluster
    n = len(pool)
    with _connected(ray, address):
        n_workers, threads = _plan(ray, workers, gpus_per_worker, address)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the caller's progress is fed below
        context.print_on_execution_start = False
        indices = np.concatenate([_chunk_indices(c, chunk_size, n) for c in chunks])
        # a block per model batch: each comes back on its own, so progress follows the job batch by batch
        shipped = replace(backbone, model=_cpu_copy(backbone), device="cpu")
        dataset = (ray.data.from_numpy([indices[s : s + batch_size] for s in range(0, indices.size, batch_size)])
                   .map_batches(_decode, batch_size=None, num_cpus=1,
                                fn_kwargs={"pool": (ray.put(replace(pool, test=None)),),
                                           "backbone": replace(backbone, model=None)})
                   .map_batches(_Embedder, batch_size=batch_size, num_cpus=1, num_gpus=gpus_per_worker or None,
                                compute=ray.data.ActorPoolStrategy(size=n_workers),
                                fn_constructor_kwargs={"backbone": (ray.put(shipped),), "threads": threads}))
        gathered = _Chunks(chunks, chunk_size, n)
        done_before, received = n - indices.size, 0
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            received += batch["index"].size
            progress((done_before + received) / n, f"{backbone.name}: {done_before + received:,}/{n:,} images (Ray: "
                                                   f"{n_workers} model worker{'s' if n_workers > 1 else ''})")
            yield from gathered.add(batch["index"], batch["features"], batch["reason"])


def _cpu_copy(backbone: Backbone):
    """The model on the CPU for shipping (actors place it on their own device)."""
    if backbone.device == "cpu":
        return backbone.model
    import copy

    return copy.deepcopy(backbone.model).to("cpu")
