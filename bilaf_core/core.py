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
from typing import Callable

import numpy as np

from .distances import float32_tensor, rows_per_chunk

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
#: Bytes of pool rows an ActiveFT step handles at a time (one block is gathered, multiplied
#: and scatter-added while in cache): 614 rows of 1,280 float32. 2-4 MB were fastest at
#: 10,000 x 1,280, K = 50 (12.0-12.8 ms a step; 13.6 at 4 MB, 19 for the whole batch at once).
ACTIVEFT_BLOCK_BYTES = 3 << 20

Progress = Callable[[float, str], None]
#: Bumped when a stage-1 method's output changes, so older cached cores are not reused.
_CORES_CACHE_VERSION = 3


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
    """Import what stage 1 needs, torch (about 1.3 s here). An app calls this in a
    background thread at start so that its first ActiveFT run does not wait for it."""
    _torch()


class _Adam:
    """Adam (Kingma & Ba, 2015; no weight decay, no AMSGrad) on one tensor, in place,
    written out with the operations of ``torch.optim.Adam``'s single-tensor path in
    their order, so its steps are identical (tested). ``torch.optim``'s first step
    imports ``torch._dynamo``: 1.1 s of CPU on a cold app's first load, beside it."""

    def __init__(self, param, *, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        torch = _torch()
        self.param, self.lr, (self.beta1, self.beta2), self.eps = param, lr, betas, eps
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = 0

    def step(self, grad) -> None:
        self.steps += 1
        self.exp_avg.lerp_(grad, 1 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        step_size = self.lr / (1 - self.beta1**self.steps)
        denom = (self.exp_avg_sq.sqrt() / (1 - self.beta2**self.steps) ** 0.5).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-step_size)


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
    f, c = float32_tensor(features), float32_tensor(centers)
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


def _activeft_block_rows(n_dims: int) -> int:
    """Pool rows per ActiveFT block: about :data:`ACTIVEFT_BLOCK_BYTES` of float32."""
    return max(64, ACTIVEFT_BLOCK_BYTES // (4 * max(n_dims, 1)))


def activeft_loss_and_grad(features, theta, temperature: float = ACTIVEFT_TEMPERATURE, *, rows=None, dtype=None):
    """ActiveFT's loss and its gradient with respect to the raw parameters theta.

    With u_j = theta_j / |theta_j|, s_ij = f_i . u_j / tau, m_i = max_j s_ij, c_i = argmax_j,
    R_j = log sum_k exp(u_k . u_j / tau) (u_k detached, k = j included):
    loss = mean_i log(1 + exp(R_{c_i} - m_i)). The gradient is written out by hand so
    that a step costs one (N x K) product and a scatter-add, not N x K exponentials.

    The samples are taken block by block (:func:`_activeft_block_rows`, gathered when
    ``rows`` is given): each block's product, nearest centres, weights and its share of
    the scatter-add are done while the block is still in cache, so the pool's rows are
    read once per step (before: a gathered (M x d) copy written, then read by the
    product and the scatter; 13 instead of 19 ms a step at 10,000 x 1,280, K = 50).

    Parameters
    ----------
    features : (N, d) torch float32 tensor, unit rows.
    theta : (K, d) torch float32 tensor.
    rows : optional (M,) int64 tensor: the loss is the mean over these rows of
        ``features`` only (a mini-batch).
    dtype : optional torch dtype of the products that find each sample's nearest centre
        and of the K x K centre products (``torch.bfloat16``: a lower precision); the
        scatter-add is always computed from the float32 rows.

    Returns
    -------
    loss : float
    grad : (K, d) tensor
    """
    torch = _torch()
    norms = theta.norm(dim=1, keepdim=True).clamp_min(1e-12)
    u = theta / norms
    n, k = (features.shape[0] if rows is None else rows.shape[0]), u.shape[0]
    low = dtype if dtype == torch.bfloat16 else None
    u_product = u if low is None else u.to(low)  # the centres as the products see them
    # the K x K products: in the same precision (they cost K^2 d, which matters from K ~ 1,000)
    cent = torch.mm(u_product, u_product.T).to(u.dtype).div_(temperature)  # in place: one K x K temporary less
    r = torch.logsumexp(cent, dim=0)
    step = _activeft_block_rows(features.shape[1])
    gathered = (None if rows is None else  # a mini-batch's block is gathered into it; a full batch's is a view
                torch.empty((min(step, n), features.shape[1]), dtype=features.dtype, device=features.device))
    loss = torch.zeros((), dtype=u.dtype, device=u.device)
    per_center = torch.zeros(k, dtype=u.dtype, device=u.device)
    pulled = torch.zeros_like(u)  # sum_i w_i f_i per winning centre: d loss / d u from the m_i term, times -tau
    for start in range(0, n, step):
        if rows is None:
            block = features[start : start + step]
        else:
            take = rows[start : start + step]
            block = torch.index_select(features, 0, take, out=gathered[: take.shape[0]])
        top, assigned = torch.max(torch.mm(block if low is None else block.to(low), u_product.T), dim=1)
        z = r[assigned] - top.to(u.dtype) / temperature
        loss += torch.nn.functional.softplus(z).sum()
        weight = torch.sigmoid(z) / n
        per_center += torch.bincount(assigned, weights=weight, minlength=k).to(u.dtype)
        pulled.index_add_(0, assigned, block * weight[:, None])
    grad_u = pulled * (-1.0 / temperature)
    # ... and from the R_j term, through the non-detached side u_j.
    softmax = torch.softmax(cent, dim=0)
    grad_u += (per_center[:, None] / temperature) * (softmax.T.to(u_product.dtype) @ u_product).to(u.dtype)
    # Back through the normalisation u = theta / |theta|.
    grad = (grad_u - (grad_u * u).sum(dim=1, keepdim=True) * u) / norms
    return float(loss) / n, grad


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
    pool = float32_tensor(features).to(device)
    init = rng.choice(n, size=n_cores, replace=False)
    theta = pool[torch.from_numpy(init).to(device)].clone()
    optimizer = _Adam(theta, lr=lr)
    batch_gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**31)))
    losses: list[float] = []
    for step in range(n_iter):
        rows = torch.randperm(n, generator=batch_gen)[:batch_size].to(device) if n > batch_size else None
        loss, grad = activeft_loss_and_grad(pool, theta, temperature, rows=rows, dtype=dtype)
        optimizer.step(grad)
        losses.append(loss)
        converged = (tol is not None and len(losses) > ACTIVEFT_WINDOW
                     and losses[-1 - ACTIVEFT_WINDOW] - loss < tol * abs(losses[-1 - ACTIVEFT_WINDOW]))
        if progress is not None and (step % 10 == 0 or step == n_iter - 1 or converged):
            progress((step + 1) / n_iter if not converged else 1.0,
                     f"ActiveFT step {step + 1}/{n_iter}" + (" (converged)" if converged else ""))
        if converged:
            break
    centers = torch.nn.functional.normalize(theta, dim=1).cpu().numpy()
    return np.sort(greedy_unique_nearest(features, centers))


def kmeans_cores(features: np.ndarray, n_cores: int, *, n_iter: int = 20, random_state: int | None = None) -> np.ndarray:
    """K-Means (faiss, k-means++ init) on the features; each centroid, in order, takes its
    nearest sample not taken by an earlier one. Returns (K,) ascending int64."""
    seed = 1234 if random_state is None else int(random_state)
    data = np.ascontiguousarray(features, dtype=np.float32)
    return np.sort(greedy_unique_nearest(data, faiss_kmeans(data, n_cores, n_iter=n_iter, seed=seed).centroids))


def faiss_kmeans(data: np.ndarray, n_clusters: int, *, n_iter: int = 20, seed: int = 1234):
    """A trained faiss K-Means (k-means++ initialisation, every point used). Few points
    per centroid are fine here (K is a budget's share, not a codebook): faiss's warning
    about them (written to the process's stderr, e.g. the app's log) is turned off."""
    import faiss

    kmeans = faiss.Kmeans(data.shape[1], n_clusters, niter=n_iter, seed=seed, max_points_per_centroid=10_000_000,
                          min_points_per_centroid=1, init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS, verbose=False)
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


def cores_cache_path(cache_dir: str | os.PathLike, features: np.ndarray, n_cores: int, method: str,
                     random_state: int | None) -> os.PathLike:
    """Where :func:`select_cores` keeps these cores in ``cache_dir`` (a file there: they
    are read back, not computed)."""
    from ._cache import keyed_path

    detail = str(_product_dtype("auto", "cuda" if _torch().cuda.is_available() else "cpu", n_cores)).split(".")[-1]
    return keyed_path(cache_dir, f"cores_v{_CORES_CACHE_VERSION}", features,
                      f"{method}_k{n_cores}_seed{random_state}{'_' + detail if method == 'activeft' else ''}.npy")


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
    path = None if cache_dir is None else cores_cache_path(cache_dir, features, n_cores, method, random_state)
    if path is not None and path.is_file():
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
