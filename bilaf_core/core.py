"""Stage 1: core samples (pseudo-class centres).

* :func:`activeft_cores` -- ActiveFT (Xie et al., CVPR 2023, Eq. 9-13 as written in the
  authors' code): K parametric centres optimised by Adam against a contrastive
  objective, then mapped to distinct samples.
* :func:`kmeans_cores` -- faiss K-Means, then the nearest untaken sample per centroid.
* :func:`fds_cores` -- farthest point sampling (k-center greedy).
* :func:`random_cores` -- uniform without replacement.

All take L2-normalised (N, d) float32 features (ActiveFT requires them, the others
work on whatever they are given), return K distinct pool indices sorted ascending
(a core's position in that array is its pseudo-class id) and accept ``random_state``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .distances import rows_per_chunk

__all__ = [
    "CORE_METHODS",
    "ACTIVEFT_TEMPERATURE",
    "ACTIVEFT_TOL",
    "ACTIVEFT_PRECISIONS",
    "activeft_batch_size",
    "preload",
    "fast_bfloat16",
    "activeft_cores",
    "activeft_loss_and_grad",
    "kmeans_cores",
    "faiss_kmeans",
    "fds_cores",
    "random_cores",
    "select_cores",
    "greedy_unique_nearest",
    "l2_normalize",
]

CORE_METHODS = ("activeft", "kmeans", "fds", "random")
ACTIVEFT_TEMPERATURE = 0.07
#: An early stop ActiveFT can be asked for (``tol=ACTIVEFT_TOL``): stop once the loss fell
#: by less than this fraction over the last ACTIVEFT_WINDOW steps (full-batch runs; a
#: mini-batch loss is too noisy to judge). Off by default: on CIFAR-10 (50,000 x 1,280) it
#: stops after 148-160 of the paper's 300 steps (half the time) with the cores' EMD proxy
#: within 0.6 %, yet BiLAF with those K = 50 cores at B = 500 lost 1.5 points of linear
#: probe (68.3 against 69.8, seeds 0-2; benchmarks/results/activeft_early_stop.md).
ACTIVEFT_TOL = 1e-3
ACTIVEFT_WINDOW = 10
#: Number formats for ActiveFT's N x K similarity product, the bulk of its work at large K.
#: "auto" takes bfloat16 from ACTIVEFT_BFLOAT16_MIN_K centres on, where the hardware
#: multiplies it natively (CPUs with AMX tiles or AVX512-BF16, CUDA GPUs with bf16), and
#: float32 elsewhere; everything else in a step stays float32. bfloat16 makes the
#: product 4-5 times faster; the similarities it returns are within 0.004 of float32
#: (the product's result is rounded to bfloat16 too), so near-ties between two centres
#: can change their winner. At K = 500 and 2,500 that left the linear probe within the
#: seeds' spread; at K = 50 (the paper's pipeline, BiLAF at B = 500) it cost 0.9 points
#: (68.9 +- 0.2 against 69.8 +- 0.5, seeds 0-2), while the product is then a small part
#: of a step: small K keeps float32 (benchmarks/results/activeft_speed.md).
ACTIVEFT_PRECISIONS = ("auto", "float32", "bfloat16")
ACTIVEFT_BFLOAT16_MIN_K = 200
#: ActiveFT's batch_size="auto": each step takes a fresh random mini-batch of a fifth of
#: the pool, at least ACTIVEFT_BATCH_RANGE[0] rows (the whole pool when it is smaller)
#: and at most ACTIVEFT_BATCH_RANGE[1] (the reference's ImageNet batch). On CIFAR-10
#: (N = 50,000) that is 10,000 rows: half the time of the paper's full-batch steps at
#: K = 50 with the same linear probe (70.0 +- 0.1 against 69.8 +- 0.5, BiLAF at B = 500),
#: and the same cores' quality at K = 2,500 (benchmarks/results/activeft_speed.md).
ACTIVEFT_BATCH_FRACTION = 5
ACTIVEFT_BATCH_RANGE = (10_000, 100_000)

Progress = Callable[[float, str], None]
#: Bumped when a stage-1 method's output changes, so older cached cores are not reused.
_CORES_CACHE_VERSION = 2


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32.

    The arithmetic of ``x / max(np.linalg.norm(x, axis=1), 1e-12)``, in row chunks so
    that no pool-size temporary is made beside the result (the one-line form made two:
    x * x and the quotient before its cast; 2 GB each for 1,281,167 x 384). Not faster.
    """
    features = np.asarray(features)
    out = np.empty(features.shape, dtype=np.float32)
    step = rows_per_chunk(features.shape[1] if features.ndim == 2 else 1)
    for start in range(0, features.shape[0], step):
        block = features[start : start + step]
        norms = np.sqrt(np.add.reduce(block * block, axis=-1, keepdims=True))
        np.divide(block, np.maximum(norms, 1e-12), out=out[start : start + step], casting="unsafe")
    return out


def _torch():
    import torch  # imported lazily: stage 2 and the CLI's help work without it

    return torch


def preload() -> None:
    """Import what stage 1 needs: torch, and torch._dynamo, which Adam's first step
    imports (about 1 s each here). An app calls this in a background thread at start so
    that its first ActiveFT run does not wait for them."""
    _torch()
    import torch._dynamo  # noqa: F401


def greedy_unique_nearest(features: np.ndarray, centers: np.ndarray, *, chunk: int = 256, shortlist: int = 8) -> np.ndarray:
    """Map centres to distinct samples: centre j (in order) takes its nearest sample that
    no earlier centre has taken (the ActiveFT reference mapping).

    "Nearest" is Euclidean, ranked by ``f.c - |f|^2 / 2``; for unit-norm features that is
    the cosine similarity the reference code sorts by.

    Parameters
    ----------
    features : (N, d) float32
    centers : (K, d) float32, K <= N

    Returns
    -------
    (K,) int64, the sample taken by each centre, in centre order.
    """
    torch = _torch()
    f = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    c = torch.from_numpy(np.ascontiguousarray(centers, dtype=np.float32))
    half_sq = 0.5 * (f * f).sum(dim=1)
    n, k = f.shape[0], c.shape[0]
    width = min(n, shortlist)
    taken = np.zeros(n, dtype=bool)
    out = np.empty(k, dtype=np.int64)
    for start in range(0, k, chunk):
        scores = c[start : start + chunk] @ f.T - half_sq
        top = torch.topk(scores, width, dim=1).indices.numpy()
        for row in range(top.shape[0]):
            choice = next((int(i) for i in top[row] if not taken[i]), None)
            if choice is None:  # every shortlisted sample was taken: rank the whole row
                full = torch.argsort(scores[row], descending=True).numpy()
                choice = int(full[~taken[full]][0])
            taken[choice] = True
            out[start + row] = choice
    return out


def fast_bfloat16(device: str) -> bool:
    """Whether ``device`` ("cpu" or "cuda...") multiplies bfloat16 matrices natively:
    a CUDA GPU with bf16 support, or a CPU with AMX tiles (Intel Sapphire Rapids and
    newer) or AVX512-BF16 instructions (AMD Zen 4 and newer, Intel Cooper Lake).
    Elsewhere bfloat16 is emulated and slower than float32."""
    torch = _torch()
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    probes = (getattr(torch.cpu, name, None)  # private; absent in some builds
              for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return any(probe is not None and probe() for probe in probes)


def _product_dtype(precision: str, device: str, n_cores: int):
    """The torch dtype of ActiveFT's similarity product for ``precision`` and K."""
    torch = _torch()
    if precision not in ACTIVEFT_PRECISIONS:
        raise ValueError(f"precision must be one of {ACTIVEFT_PRECISIONS}, got {precision!r}")
    low = precision == "bfloat16" or (precision == "auto" and n_cores >= ACTIVEFT_BFLOAT16_MIN_K
                                      and fast_bfloat16(device))
    return torch.bfloat16 if low else torch.float32


def activeft_batch_size(n_samples: int) -> int:
    """Rows per ActiveFT step for ``batch_size="auto"`` (see :data:`ACTIVEFT_BATCH_FRACTION`);
    ``n_samples`` itself means full-batch steps."""
    low, high = ACTIVEFT_BATCH_RANGE
    return min(n_samples, max(low, min(high, n_samples // ACTIVEFT_BATCH_FRACTION)))


def _similarity_block_rows(n_centers: int, itemsize: int = 4) -> int:
    """Rows per block so that a (rows x K) block (~2 MB) stays in cache."""
    return max(256, (1 << 21) // (max(n_centers, 1) * itemsize))


def _max_similarity(features, centers, buffer=None):
    """Max and argmax over centres of f_i . u_j, block by block: each block's product is
    reduced while it is still in cache, which is faster than one N x K product alone.
    The product runs in ``features``' dtype (``centers`` are cast to it); bfloat16
    maxima are returned as float32."""
    torch = _torch()
    n, k = features.shape[0], centers.shape[0]
    rows = _similarity_block_rows(k, features.element_size())
    if buffer is None or buffer.shape[0] < min(rows, n) or buffer.dtype != features.dtype:
        buffer = torch.empty((min(rows, n), k), dtype=features.dtype, device=features.device)
    centers = centers.to(features.dtype)
    top = torch.empty(n, dtype=features.dtype, device=features.device)
    assigned = torch.empty(n, dtype=torch.long, device=features.device)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        block = buffer[: stop - start]
        torch.mm(features[start:stop], centers.T, out=block)
        torch.max(block, dim=1, out=(top[start:stop], assigned[start:stop]))
    return top.to(torch.promote_types(top.dtype, torch.float32)), assigned


def activeft_loss_and_grad(features, theta, temperature: float = ACTIVEFT_TEMPERATURE, *, buffer=None,
                           product_features=None, rows=None):
    """ActiveFT's loss and its gradient with respect to the raw parameters theta.

    With u_j = theta_j / |theta_j|, s_ij = f_i . u_j / tau, m_i = max_j s_ij, c_i = argmax_j,
    R_j = log sum_k exp(u_k . u_j / tau) (u_k detached, k = j included):
    loss = mean_i log(1 + exp(R_{c_i} - m_i)). The gradient is written out by hand so
    that a step costs one (N x K) product and a scatter-add, not N x K exponentials.

    Parameters
    ----------
    features : (N, d) torch float32 tensor, unit rows.
    theta : (K, d) torch float32 tensor.
    buffer : optional (rows, K) tensor reused for the similarity blocks (see
        :func:`_max_similarity`), of ``product_features``' dtype.
    product_features : optional (M, d) tensor for the product that finds each sample's
        nearest centre: ``features`` (or its ``rows``) in a lower precision (bfloat16),
        which the K x K centre products then use too. The scatter-add of the gradient
        is always computed from ``features``.
    rows : optional (M,) int64 tensor: the loss is the mean over these rows of
        ``features`` only (a mini-batch); ``product_features`` are then those rows.

    Returns
    -------
    loss : float
    grad : (K, d) tensor
    """
    torch = _torch()
    norms = theta.norm(dim=1, keepdim=True).clamp_min(1e-12)
    u = theta / norms
    n, k = features.shape[0], u.shape[0]
    if product_features is None:
        product_features = features if rows is None else features[rows]
    low = product_features.dtype if product_features.dtype == torch.bfloat16 else None
    u_product = u if low is None else u.to(low)  # the centres as the products see them
    top, assigned = _max_similarity(product_features, u_product, buffer)
    m = top / temperature
    # the K x K products: in the same precision (they cost K^2 d, which matters from K ~ 1,000)
    cent = torch.mm(u_product, u_product.T).to(u.dtype).div_(temperature)  # in place: one K x K temporary less
    r = torch.logsumexp(cent, dim=0)
    z = r[assigned] - m
    loss = torch.nn.functional.softplus(z).mean()
    weight = torch.sigmoid(z) / assigned.shape[0]
    # d loss / d u from the m_i term: only the winning centre of each sample gets it, a
    # scatter-add written as a sparse (K x N) CSR product (rows = centres, the samples
    # sorted by centre; a mini-batch's columns are its rows of the pool) to avoid an
    # (M x d) temporary.
    per_center = torch.bincount(assigned, weights=weight, minlength=k).to(u.dtype)
    order = torch.argsort(assigned)
    row_starts = torch.zeros(k + 1, dtype=torch.long, device=features.device)
    row_starts[1:] = torch.cumsum(torch.bincount(assigned, minlength=k), 0)
    columns = order if rows is None else rows[order]
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is long-standing
        warnings.simplefilter("ignore", UserWarning)
        scatter = torch.sparse_csr_tensor(row_starts, columns, weight[order], (k, n), check_invariants=False)
    grad_u = (scatter @ features) * (-1.0 / temperature)
    # ... and from the R_j term, through the non-detached side u_j.
    softmax = torch.softmax(cent, dim=0)
    grad_u += (per_center[:, None] / temperature) * (softmax.T.to(u_product.dtype) @ u_product).to(u.dtype)
    # Back through the normalisation u = theta / |theta|.
    grad = (grad_u - (grad_u * u).sum(dim=1, keepdim=True) * u) / norms
    return float(loss), grad


def activeft_cores(
    features: np.ndarray,
    n_cores: int,
    *,
    n_iter: int = 300,
    lr: float = 1e-3,
    temperature: float = ACTIVEFT_TEMPERATURE,
    tol: float | None = None,
    batch_size: int | str = "auto",
    precision: str = "auto",
    random_state: int | None = None,
    device: str | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """ActiveFT core selection (Xie et al., CVPR 2023; the authors' loss, see
    :func:`activeft_loss_and_grad`).

    Parameters
    ----------
    features : (N, d) float32, unit rows.
    n_cores : int, K <= N.
    n_iter, lr : Adam steps (no schedule) and learning rate; the paper's 300 and 1e-3.
    tol : stop before ``n_iter`` steps once the loss fell by less than this fraction
        over the last :data:`ACTIVEFT_WINDOW` steps; None (default) runs every step, as
        the paper does (see :data:`ACTIVEFT_TOL` for the trade-off). Full-batch runs
        only (a ValueError otherwise: a mini-batch loss cannot show convergence).
    batch_size : int or "auto"; pools larger than this draw a fresh random mini-batch
        of this many samples every step, as the reference's ImageNet script does (with
        100,000). "auto" (default): :func:`activeft_batch_size`, a fifth of the pool
        within :data:`ACTIVEFT_BATCH_RANGE`; ``batch_size >= N`` gives the paper's
        full-batch steps.
    precision : one of :data:`ACTIVEFT_PRECISIONS`, the number format of the N x K
        similarity product; "auto" (default) is bfloat16 from
        :data:`ACTIVEFT_BFLOAT16_MIN_K` centres on where the device multiplies it
        natively (:func:`fast_bfloat16`), float32 elsewhere. "float32" reproduces the
        reference's arithmetic.
    device : "cpu", "cuda", or None for CUDA when available.

    Returns
    -------
    (K,) int64 distinct pool indices, ascending.
    """
    torch = _torch()
    rng = np.random.default_rng(random_state)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _product_dtype(precision, device, n_cores)
    n = features.shape[0]
    if batch_size == "auto":
        batch_size = activeft_batch_size(n)
    elif not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    if tol is not None and n > batch_size:
        raise ValueError(f"tol stops full-batch runs only, but {n:,} samples in batches of {batch_size:,} see a "
                         f"new mini-batch every step, whose loss cannot show convergence; pass batch_size={n} "
                         "(full batch) with tol, or leave tol=None")
    pool = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device)
    pool_product = pool if dtype == torch.float32 else pool.to(dtype)
    init = rng.choice(n, size=n_cores, replace=False)
    theta = torch.nn.Parameter(pool[torch.from_numpy(init).to(device)].clone())
    optimizer = torch.optim.Adam([theta], lr=lr)
    batch_gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**31)))
    rows = _similarity_block_rows(n_cores, pool_product.element_size())
    buffer = torch.empty((min(n, batch_size, rows), n_cores), dtype=dtype, device=device)
    # a mini-batch's rows are gathered into one reused tensor: a fresh one every step costs
    # 7 times the copy in page faults (45 ms instead of 6 ms for 10,000 x 1,280 float32)
    gathered = torch.empty((batch_size, pool.shape[1]), dtype=dtype, device=device) if n > batch_size else None
    losses: list[float] = []
    for step in range(n_iter):
        rows = batch_product = None
        if n > batch_size:  # a mini-batch: only its rows are gathered, in the product's precision
            rows = torch.randperm(n, generator=batch_gen)[:batch_size].to(device)
            batch_product = torch.index_select(pool_product, 0, rows, out=gathered)
        elif pool_product is not pool:
            batch_product = pool_product
        loss, grad = activeft_loss_and_grad(pool, theta.detach(), temperature, buffer=buffer,
                                            product_features=batch_product, rows=rows)
        theta.grad = grad
        optimizer.step()
        losses.append(loss)
        converged = (tol is not None and len(losses) > ACTIVEFT_WINDOW
                     and losses[-1 - ACTIVEFT_WINDOW] - loss < tol * abs(losses[-1 - ACTIVEFT_WINDOW]))
        if progress is not None and (step % 10 == 0 or step == n_iter - 1 or converged):
            progress((step + 1) / n_iter if not converged else 1.0,
                     f"ActiveFT step {step + 1}/{n_iter}" + (" (converged)" if converged else ""))
        if converged:
            break
    centers = torch.nn.functional.normalize(theta.detach(), dim=1).cpu().numpy()
    return np.sort(greedy_unique_nearest(features, centers))


def kmeans_cores(features: np.ndarray, n_cores: int, *, n_iter: int = 20, random_state: int | None = None) -> np.ndarray:
    """K-Means (faiss, k-means++ init) on the features; each centroid, in order, takes its
    nearest sample not taken by an earlier one. Returns (K,) ascending int64."""
    seed = 1234 if random_state is None else int(random_state)
    data = np.ascontiguousarray(features, dtype=np.float32)
    return np.sort(greedy_unique_nearest(data, faiss_kmeans(data, n_cores, n_iter=n_iter, seed=seed).centroids))


def faiss_kmeans(data: np.ndarray, n_clusters: int, *, n_iter: int = 20, seed: int = 1234):
    """A trained faiss K-Means (k-means++ initialisation, every point used)."""
    import faiss

    kmeans = faiss.Kmeans(data.shape[1], n_clusters, niter=n_iter, seed=seed, max_points_per_centroid=10_000_000,
                          init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS, verbose=False)
    kmeans.train(data)
    return kmeans


def fds_cores(features: np.ndarray, n_cores: int, *, random_state: int | None = None) -> np.ndarray:
    """Farthest point sampling / k-center greedy: a seeded random first point, then
    repeatedly the sample farthest from the chosen set. Returns (K,) ascending int64."""
    rng = np.random.default_rng(random_state)
    data = np.ascontiguousarray(features, dtype=np.float32)
    sq = np.einsum("ij,ij->i", data, data)
    chosen = np.empty(n_cores, dtype=np.int64)
    chosen[0] = rng.integers(data.shape[0])
    nearest_sq = np.full(data.shape[0], np.inf, dtype=np.float32)
    for i in range(1, n_cores):
        latest = chosen[i - 1]
        np.minimum(nearest_sq, sq + sq[latest] - 2.0 * (data @ data[latest]), out=nearest_sq)
        nearest_sq[chosen[:i]] = -1.0  # chosen samples can never be farthest again
        chosen[i] = int(np.argmax(nearest_sq))
    return np.sort(chosen)


def random_cores(n_samples: int, n_cores: int, *, random_state: int | None = None) -> np.ndarray:
    """K distinct indices drawn uniformly. Returns (K,) ascending int64."""
    return np.sort(np.random.default_rng(random_state).choice(n_samples, size=n_cores, replace=False)).astype(np.int64)


def select_cores(
    features: np.ndarray,
    n_cores: int,
    *,
    method: str = "activeft",
    random_state: int | None = None,
    progress: Progress | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Dispatch to one stage-1 method. Returns (K,) ascending int64 pool indices.

    ``cache_dir``: a folder where the cores are kept on disk, keyed by a content hash
    of ``features``, K, the method, the seed and (ActiveFT) the product's precision on
    this machine, so a restarted app or a second run finds them at once; None (default)
    computes them every time.
    """
    if method not in CORE_METHODS:
        raise ValueError(f"core_method must be one of {CORE_METHODS}, got {method!r}")
    path = None
    if cache_dir is not None:
        from .projection import features_digest

        detail = str(_product_dtype("auto", "cuda" if _torch().cuda.is_available() else "cpu", n_cores)).split(".")[-1]
        path = Path(cache_dir) / (f"cores_v{_CORES_CACHE_VERSION}_{features_digest(features)}_{method}_k{n_cores}"
                                  f"_seed{random_state}{'_' + detail if method == 'activeft' else ''}.npy")
        if path.is_file():
            return np.load(path)
    if method == "activeft":
        cores = activeft_cores(features, n_cores, random_state=random_state, progress=progress)
    elif method == "kmeans":
        cores = kmeans_cores(features, n_cores, random_state=random_state)
    elif method == "fds":
        cores = fds_cores(features, n_cores, random_state=random_state)
    else:
        cores = random_cores(features.shape[0], n_cores, random_state=random_state)
    if path is not None:
        from ._io import atomic_open

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as handle:
            np.save(handle, cores)
    return cores
