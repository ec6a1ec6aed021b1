"""Data pools, batch tables and step timing shared by every stack of the workloads W1-W3.

Data pools, the batch index table and the test dequantization draws are built from fixed seeds
in each process, so every stack sees the same batches in the same order and is scored on the
same points. Timed per step: batch gather from the pool, forward, backward, optimiser update
(plus the spectral-norm refresh in W1) and pulling the loss to the host (``float(loss)`` /
``loss.item()``). Reported: median over the steps after the first 5, p10/p90, the first step
(JAX: trace + compile), peak RSS after training and at the end (after the test evaluation).
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable

import numpy as np

N_TRAIN, N_TEST, BATCH_2D = 100_000, 5_000, 500
BATCH_DIGITS, DIGITS_LEVELS, DIGITS_DIMS = 64, 17, 64
INDEX_SEED, DEQUANT_SEED, TEST_DRAWS = 1234, 4321, 8
WARMUP = 5


# ---------------------------------------------------------------- data


def six_d(n: int, seed: int) -> np.ndarray:
    r"""A 6-D density with curved, heteroscedastic and heavy-tailed dependencies (float64).

    With :math:`(x_1, x_2)` from 8gaussians divided by 2, :math:`\epsilon_i \sim N(0, 1)` and
    :math:`t \sim t_5`:

    .. math::
        x_3 = \sin(2 x_1) + 0.1\epsilon_3, \quad x_4 = x_2 x_3 + 0.2\epsilon_4, \quad
        x_5 = 0.5 t, \quad x_6 = \tanh(2 x_5 x_1) + 0.1\epsilon_6.
    """
    from jflows.data import sample_toy

    rng = np.random.default_rng(seed + 100)
    x12 = sample_toy("8gaussians", n, seed).astype(np.float64) / 2
    eps = rng.standard_normal((n, 3))
    x3 = np.sin(2 * x12[:, 0]) + 0.1 * eps[:, 0]
    x4 = x12[:, 1] * x3 + 0.2 * eps[:, 1]
    x5 = 0.5 * rng.standard_t(5, n)
    x6 = np.tanh(2 * x5 * x12[:, 0]) + 0.1 * eps[:, 2]
    return np.column_stack([x12, x3, x4, x5, x6])


def toy_pools(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train pool (100 000) and test set (5 000) of a 2-D toy set or ``6d``, float32.

    ``moons`` is ``make_moons(noise=0.05)`` standardised with the train pool's mean/std;
    ``8gaussians`` and ``checkerboard`` are ``jflows.data.sample_toy``'s (not standardised;
    true entropies 2.833 and 3.466 nats); ``6d`` is :func:`six_d` standardised.
    """
    if name == "moons":
        from sklearn.datasets import make_moons

        train = make_moons(N_TRAIN, noise=0.05, random_state=seed)[0]
        test = make_moons(N_TEST, noise=0.05, random_state=seed + 1)[0]
        mean, std = train.mean(axis=0), train.std(axis=0)
        train, test = (train - mean) / std, (test - mean) / std
    elif name in ("8gaussians", "checkerboard"):
        from jflows.data import sample_toy

        train, test = sample_toy(name, N_TRAIN, seed), sample_toy(name, N_TEST, seed + 1)
    elif name == "6d":
        train, test = six_d(N_TRAIN, seed), six_d(N_TEST, seed + 1)
        mean, std = train.mean(axis=0), train.std(axis=0)
        train, test = (train - mean) / std, (test - mean) / std
    else:
        raise SystemExit(f"unknown data {name!r}; use moons, 8gaussians, checkerboard or 6d")
    return np.ascontiguousarray(train, np.float32), np.ascontiguousarray(test, np.float32)


def digits_pools() -> tuple[np.ndarray, np.ndarray]:
    """The fixed 1500/297 split of sklearn's digits, uint8 levels 0..16, shape (N, 8, 8, 1)."""
    from jflows.data import load_dataset

    ds = load_dataset("digits")
    return ds.train, ds.test


def index_table(n_pool: int, steps: int, batch: int, seed: int = INDEX_SEED) -> np.ndarray:
    """``(steps, batch)`` row indices: consecutive epochs of fixed permutations, chunked."""
    rng = np.random.default_rng(seed)
    need = steps * batch
    perms = [rng.permutation(n_pool) for _ in range(-(-need // n_pool))]
    return np.concatenate(perms)[:need].reshape(steps, batch)


def dequant_draws(levels_u8: np.ndarray, n: int = TEST_DRAWS) -> np.ndarray:
    """``n`` fixed dequantizations ``k + u`` (level units, float32), shape ``(n, *x.shape)``."""
    u = np.random.default_rng(DEQUANT_SEED).random((n, *levels_u8.shape))
    k = levels_u8.astype(np.float64)[None]
    return np.minimum(k + u, np.nextafter(k + 1.0, 0.0)).astype(np.float32)


def bits_per_dim(nll_nats: float, dims: int = DIGITS_DIMS) -> float:
    """``jflows.data.bits_per_dim`` (``nll / (D ln 2)``) without importing jflows or JAX.

    The PyTorch stacks score with it, so that their processes hold neither library and their
    peak RSS is their own; ``tests/test_benchmarks_harness.py`` checks it against jflows'.
    """
    return float(nll_nats) / (dims * math.log(2.0))


def nll_in_levels(nll_unit: float, dims: int = DIGITS_DIMS, levels: int = DIGITS_LEVELS) -> float:
    """NLL of ``x = k + u`` (level units) from that of ``y = x / levels`` (a peer's units).

    The scaling ``x = L y`` adds its log-det ``D ln L`` (``jflows.data.dequantize``'s docstring);
    ``jflows.data.bits_per_dim`` of the result is the papers' bits/dim.
    """
    return nll_unit + dims * math.log(levels)


# ---------------------------------------------------------------- measuring


def rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_loop(step: Callable[[int], float], steps: int) -> tuple[list[float], list[float]]:
    """Runs ``step(i)`` (which must return the loss as a Python float) and times each call."""
    times, losses = [], []
    for i in range(steps):
        start = time.perf_counter()
        loss = step(i)
        times.append(time.perf_counter() - start)
        losses.append(loss)
    return times, losses


def summary(times: list[float], losses: list[float], **extra) -> dict:
    """Median / p10 / p90 (ms) over the steps after the first 5, first step, RSS, losses."""
    t = np.asarray(times[WARMUP:] if len(times) > WARMUP else times) * 1e3
    tail = [v for v in losses[-50:] if math.isfinite(v)]
    return dict(
        status="ok",
        steps=len(times),
        median_ms=float(np.median(t)),
        p10_ms=float(np.percentile(t, 10)),
        p90_ms=float(np.percentile(t, 90)),
        first_ms=times[0] * 1e3,
        warmup_s=float(sum(times[:WARMUP])),
        rss_train_mb=rss_mb(),
        loss_end=float(np.mean(tail)) if tail else float("nan"),
        nonfinite_losses=sum(not math.isfinite(v) for v in losses),
        **extra,
    )


def count_params(tree) -> int:
    """Number of scalars in the array leaves of a pytree."""
    import jax

    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(tree)))


def step_keys(steps: int, seed: int = 0) -> list:
    """One JAX key per step (from ``1 + seed``), split before the timed loop.

    Each key is wrapped from its row of the split's key data: ``list(keys)`` would slice the
    key array once per index, one compiled program per step (105 MB of peak RSS for
    1000 steps, counted against every JAX stack); one wrap program serves all rows.
    """
    import jax

    data = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(1 + seed), steps)))
    return [jax.random.wrap_key_data(row) for row in data]
