"""Stage 1: ActiveFT's hand-written gradient against autograd, and every core method's
properties (exact count, distinct, ascending, seeded)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bilaf_core.core import (
    ACTIVEFT_TOL,
    activeft_cores,
    activeft_loss_and_grad,
    fds_cores,
    greedy_unique_nearest,
    kmeans_cores,
    l2_normalize,
    random_cores,
    select_cores,
)


def _reference_loss(features, theta, tau=0.07):
    """The loss exactly as the authors' ActiveFT_CIFAR.py writes it (autograd)."""
    centroids = torch.nn.functional.normalize(theta, dim=1)
    prod_exp = torch.exp(features @ centroids.T / tau)
    pos, k = prod_exp.max(dim=1)
    cent_sum = torch.exp(centroids.detach() @ centroids.T / tau).sum(dim=0)
    return -(torch.log(pos) - torch.log(pos + cent_sum[k])).mean()


def test_activeft_gradient_matches_autograd_of_reference_loss():
    gen = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(400, 12, generator=gen, dtype=torch.float64), dim=1)
    theta = features[:6].clone() + 0.05 * torch.randn(6, 12, generator=gen, dtype=torch.float64)
    leaf = theta.clone().requires_grad_(True)
    loss = _reference_loss(features, leaf)
    loss.backward()
    ours, grad = activeft_loss_and_grad(features, theta)
    assert ours == pytest.approx(loss.item(), rel=1e-12)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-9, atol=1e-12)


def test_activeft_lowers_its_loss_from_the_random_start():
    rng = np.random.default_rng(0)
    centers = l2_normalize(rng.standard_normal((5, 16)).astype(np.float32))
    features = l2_normalize(np.repeat(centers, 40, axis=0) + 0.05 * rng.standard_normal((200, 16)).astype(np.float32))
    cores = activeft_cores(features, 5, random_state=0)
    assert cores.size == 5 and np.all(np.diff(cores) > 0)
    np.testing.assert_array_equal(cores, activeft_cores(features, 5, random_state=0))
    start = np.random.default_rng(0).choice(200, size=5, replace=False)  # the same seeded initialisation
    pool = torch.from_numpy(features)
    loss_start, _ = activeft_loss_and_grad(pool, pool[start])
    loss_end, _ = activeft_loss_and_grad(pool, pool[cores])
    assert loss_end < loss_start
    # the start has two centres in one blob; the optimised cores cover all five
    assert np.unique(start // 40).size == 4 and np.unique(cores // 40).size == 5


def test_activeft_stops_once_its_loss_flattens_and_tol_none_runs_every_step():
    rng = np.random.default_rng(0)
    centers = l2_normalize(rng.standard_normal((5, 16)).astype(np.float32))
    features = l2_normalize(np.repeat(centers, 40, axis=0) + 0.05 * rng.standard_normal((200, 16)).astype(np.float32))
    for tol, stops_early in ((ACTIVEFT_TOL, True), (None, False)):
        messages = []
        cores = activeft_cores(features, 5, lr=0.01, tol=tol, random_state=0,  # lr 0.01: flat after ~90 steps
                               progress=lambda f, m: messages.append((f, m)))
        assert cores.size == 5 and messages[-1][0] == 1.0
        last_step = int(messages[-1][1].split()[2].split("/")[0])
        assert ("converged" in messages[-1][1]) is stops_early
        assert (last_step < 300) is stops_early
        assert np.unique(cores // 40).size == 5  # stopped early or not, the cores cover all five blobs


def test_activeft_minibatch_path_runs_and_is_seeded():
    features = l2_normalize(np.random.default_rng(1).standard_normal((500, 8)).astype(np.float32))
    a = activeft_cores(features, 7, n_iter=20, batch_size=128, random_state=3)
    b = activeft_cores(features, 7, n_iter=20, batch_size=128, random_state=3)
    np.testing.assert_array_equal(a, b)
    assert np.unique(a).size == 7


def test_bfloat16_product_finds_the_same_cores_on_separated_blobs_and_checks_its_name():
    rng = np.random.default_rng(0)
    centers = l2_normalize(rng.standard_normal((5, 16)).astype(np.float32))
    features = l2_normalize(np.repeat(centers, 40, axis=0) + 0.05 * rng.standard_normal((200, 16)).astype(np.float32))
    low = activeft_cores(features, 5, precision="bfloat16", random_state=0)
    assert low.size == 5 and np.unique(low // 40).size == 5
    # the loss and gradient from bfloat16 products match float32 closely (one rounding of values below 1)
    pool, theta = torch.from_numpy(features), torch.from_numpy(features[low]) + 0.01
    exact, grad = activeft_loss_and_grad(pool, theta)
    approx, grad_low = activeft_loss_and_grad(pool, theta, dtype=torch.bfloat16)
    assert approx == pytest.approx(exact, rel=1e-2)
    assert float((grad_low - grad).norm() / grad.norm()) < 0.02
    with pytest.raises(ValueError, match="precision must be one of"):
        activeft_cores(features, 5, precision="half")


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (True, False, True),   # Intel Sapphire Rapids and newer
    (False, True, True),   # AMD Zen 4 (a CI machine): bf16 4.7x faster than float32 there, was missed
    (False, False, False),
    (None, None, False),   # a torch build without the private probes
])
def test_fast_bfloat16_on_cpu_follows_amx_or_avx512_bf16(monkeypatch, amx, avx512_bf16, expected):
    from bilaf_core.core import fast_bfloat16

    for name, value in (("_is_amx_tile_supported", amx), ("_is_avx512_bf16_supported", avx512_bf16)):
        if value is None:
            monkeypatch.delattr(torch.cpu, name, raising=False)
        else:
            monkeypatch.setattr(torch.cpu, name, lambda value=value: value)
    assert fast_bfloat16("cpu") is expected


def test_cores_cached_on_disk_are_served_without_recomputing(tmp_path, monkeypatch):
    import bilaf_core.core as core

    features = l2_normalize(np.random.default_rng(2).standard_normal((300, 8)).astype(np.float32))
    first = select_cores(features, 6, method="activeft", random_state=1, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("cores_*_activeft_k6_seed1_*.npy"))) == 1
    monkeypatch.setattr(core, "activeft_cores", lambda *a, **k: pytest.fail("cached cores were recomputed"))
    np.testing.assert_array_equal(select_cores(features, 6, method="activeft", random_state=1, cache_dir=tmp_path),
                                  first)
    # another seed, K or pool is another entry
    monkeypatch.undo()
    other = select_cores(features[::-1].copy(), 6, method="activeft", random_state=1, cache_dir=tmp_path)
    assert other.size == 6 and len(list(tmp_path.glob("cores_*.npy"))) == 2
    with pytest.raises(ValueError, match="core_method must be one of"):
        select_cores(features, 6, method="kmedoids", cache_dir=tmp_path)


def test_minibatch_loss_and_gradient_are_those_of_the_batch_rows_as_a_pool():
    gen = torch.Generator().manual_seed(1)
    pool = torch.nn.functional.normalize(torch.randn(300, 10, generator=gen, dtype=torch.float64), dim=1)
    theta = pool[:7].clone() + 0.05 * torch.randn(7, 10, generator=gen, dtype=torch.float64)
    rows = torch.randperm(300, generator=gen)[:120]
    loss, grad = activeft_loss_and_grad(pool, theta, rows=rows)  # columns of the scatter: the pool's rows
    expected_loss, expected_grad = activeft_loss_and_grad(pool[rows], theta)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-13)


def test_greedy_mapping_gives_each_center_a_distinct_nearest_sample():
    features = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]], dtype=np.float32)
    centers = np.array([[0.1, 0.0], [0.2, 0.0], [0.3, 0.0]], dtype=np.float32)
    # all three centres are nearest to sample 0; in order they take 0, then 1, then 2
    np.testing.assert_array_equal(greedy_unique_nearest(features, centers, shortlist=1), [0, 1, 2])


@pytest.mark.parametrize("method", [kmeans_cores, fds_cores])
def test_kmeans_and_fds_cover_separated_blobs(method, blobs):
    cores = method(blobs, 3, random_state=0)
    assert np.unique(cores // 60).size == 3
    np.testing.assert_array_equal(cores, method(blobs, 3, random_state=0))


def test_kmeans_with_few_points_per_centroid_writes_nothing_to_stderr(blobs, capfd):
    # Seen in the app's server log: faiss's "WARNING clustering 1797 points to 89 centroids:
    # please provide at least 3471 training points", on every selection of the digits default.
    cores = kmeans_cores(blobs, 9, random_state=0)  # 180 points: 20 a centroid, under faiss's 39
    assert cores.size == 9
    assert capfd.readouterr().err == ""


def test_fds_picks_the_farthest_point_by_hand():
    points = np.array([[0.0], [1.0], [10.0], [4.0]], dtype=np.float32)
    cores = fds_cores(points, 3, random_state=0)
    first = np.random.default_rng(0).integers(4)
    assert first in cores and 2 in cores or first == 2


def test_random_cores_distinct_sorted_seeded():
    a = random_cores(50, 10, random_state=4)
    assert np.unique(a).size == 10 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, random_cores(50, 10, random_state=4))


def test_l2_normalize_in_chunks_has_the_arithmetic_of_one_division(monkeypatch):
    # Chunked so that no pool-size temporary is made; the numbers must stay those of
    # x / max(|x|, 1e-12) (cached cores and reference runs depend on them), zero rows zero.
    import bilaf_core.core as core

    monkeypatch.setattr(core, "rows_per_chunk", lambda n_cols: 7)  # many chunks, a ragged last one
    x = np.random.default_rng(0).standard_normal((100, 13)).astype(np.float32) * 5
    x[3] = 0
    expected = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        out = core.l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    assert not out[3].any()


def test_activeft_imports_no_torch_dynamo():
    # torch.optim.Adam's first step imported torch._dynamo: 1.1 s of a cold app's first load
    code = ("import sys, numpy as np; from bilaf_core.core import activeft_cores, l2_normalize; "
            "x = l2_normalize(np.random.default_rng(0).standard_normal((60, 5)).astype(np.float32)); "
            "activeft_cores(x, 4, n_iter=3, random_state=0); assert 'torch._dynamo' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


@pytest.mark.parametrize("lr", [1e-3, 0.05])
def test_hand_written_adam_takes_torch_adams_steps_exactly(lr):
    import torch

    from bilaf_core.core import _Adam

    gen = torch.Generator().manual_seed(0)
    start = torch.randn(17, 9, generator=gen)
    mine, theirs = start.clone(), torch.nn.Parameter(start.clone())
    adam, reference = _Adam(mine, lr=lr), torch.optim.Adam([theirs], lr=lr)
    for _ in range(50):
        grad = torch.randn(17, 9, generator=gen) * 3
        adam.step(grad)
        theirs.grad = grad.clone()
        reference.step()
        assert torch.equal(mine, theirs.detach())


def test_tol_with_mini_batches_is_refused_instead_of_ignored():
    # Review finding: with batch_size="auto" any pool over 10,000 samples runs mini-batches,
    # and tol= was then silently ignored.
    features = l2_normalize(np.random.default_rng(1).standard_normal((500, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="full-batch runs only.*batch_size=500"):
        activeft_cores(features, 7, n_iter=20, batch_size=128, tol=ACTIVEFT_TOL, random_state=3)
    assert activeft_cores(features, 7, n_iter=20, batch_size=500, tol=ACTIVEFT_TOL, random_state=3).size == 7


def test_read_only_features_select_cores_without_torchs_not_writable_warning():
    # the app shares its feature matrices read-only; torch.from_numpy warned on each
    import warnings

    features = l2_normalize(np.random.default_rng(4).standard_normal((80, 6)).astype(np.float32))
    features.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert activeft_cores(features, 5, n_iter=3, random_state=0).size == 5
        assert select_cores(features, 5, method="kmeans", random_state=0).size == 5
