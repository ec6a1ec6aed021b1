"""The trace cache: a restart loads the exported step instead of tracing, and is never wrong."""

from __future__ import annotations

import os

import jax
import numpy as np
import optax
import pytest

from jflows import models
from jflows.errors import UnfingerprintableError
from jflows.training import create_train_state, make_train_step, trace_cache
from jflows.training.cache_bounds import evict_least_recently_used
from jflows.training.fingerprint import fingerprint


def _flow(hidden=(8,)):
    """A residual flow: scan over blocks, roulette log-det (custom VJP, while loop, RNG)."""
    return models.resflow((2,), n_blocks=1, hidden=hidden, n_exact_terms=1, actnorm=False)


def _small(hidden=(4,)):
    return models.realnvp((2,), n_couplings=2, hidden=hidden)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    directory = str(tmp_path / "traces")
    monkeypatch.setattr(trace_cache, "trace_cache_dir", lambda: directory)
    monkeypatch.setattr(trace_cache, "stats", dict.fromkeys(trace_cache.stats, 0))
    return directory


def _train(flow, x, steps=2):
    """Builds the state and step from scratch (as a restarted process would) and trains."""
    jax.clear_caches()
    opt = optax.adam(1e-2)
    state = create_train_state(flow, opt, x, jax.random.key(0))
    step = make_train_step(flow, opt)
    losses = []
    for i in range(steps):
        state, metrics = step(state, x, jax.random.key(i))
        losses.append(float(metrics["loss"]))
    return state, losses


def _data(n=64):
    return np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)


def test_fingerprint_is_content_not_identity():
    assert fingerprint(_flow(), optax.adam(1e-3)) == fingerprint(_flow(), optax.adam(1e-3))
    assert fingerprint(_flow()) != fingerprint(_flow(hidden=(16,)))
    assert fingerprint(_small()) != fingerprint(_small(hidden=(8,)))
    assert fingerprint(optax.adam(1e-3)) != fingerprint(optax.adam(1e-3, b2=0.99))
    schedule = optax.cosine_decay_schedule(1e-3, 100)
    assert fingerprint(optax.adam(schedule)) != fingerprint(
        optax.adam(optax.cosine_decay_schedule(1e-3, 200)))
    with pytest.raises(UnfingerprintableError, match="object"):
        fingerprint({"a": object()})


def test_restart_loads_the_stored_step_and_trains_identically(cache_dir, monkeypatch):
    x = _data()
    monkeypatch.setattr(trace_cache, "trace_cache_dir", lambda: None)
    plain_state, plain = _train(_flow(), x)
    monkeypatch.setattr(trace_cache, "trace_cache_dir", lambda: cache_dir)

    _, first = _train(_flow(), x)
    assert trace_cache.stats == {"hits": 0, "stores": 2, "uncached": 0}  # init and step
    assert len(os.listdir(cache_dir)) == 2

    def no_tracing(*_):
        raise AssertionError("a restart traced the function again")

    monkeypatch.setattr(trace_cache._CachedJit, "_export", no_tracing)
    state, second = _train(_flow(), x)
    assert trace_cache.stats["hits"] == 2
    np.testing.assert_array_equal(first, plain)
    np.testing.assert_array_equal(second, plain)
    jax.tree.map(np.testing.assert_array_equal, state.params, plain_state.params)


@pytest.mark.slow  # ~18 s of compilation; the restart test above keeps the cache in the fast loop
def test_other_models_and_signatures_are_traced_and_a_corrupt_entry_is_replaced(
    cache_dir, monkeypatch
):
    x = _data()
    _, stored = _train(_small(), x, steps=1)
    _train(_small(hidden=(8,)), x, steps=1)  # another model: its own entries
    assert trace_cache.stats["stores"] == 4 and len(os.listdir(cache_dir)) == 4

    def step_on_32_rows():
        opt = optax.adam(1e-2)
        state = create_train_state(_small(), opt, x, jax.random.key(0))
        _, metrics = make_train_step(_small(), opt)(state, x[:32], jax.random.key(1))
        return float(metrics["loss"])

    cached = step_on_32_rows()  # another batch size: its own entry, not the 64-row step
    assert trace_cache.stats["stores"] == 5 and len(os.listdir(cache_dir)) == 5
    with monkeypatch.context() as off:
        off.setattr(trace_cache, "trace_cache_dir", lambda: None)
        assert cached == step_on_32_rows()

    for name in os.listdir(cache_dir):
        with open(os.path.join(cache_dir, name), "wb") as f:
            f.write(b"not a trace")
    with pytest.warns(RuntimeWarning, match="cannot be read"):
        _, again = _train(_small(), x, steps=1)
    assert again == stored
    assert trace_cache.stats["stores"] == 7  # the two entries read were written again


def test_unfingerprintable_parts_mean_a_plain_jit(cache_dir):
    fn = trace_cache.cached_jit(lambda a: a + 1, name="f", parts=(object(),))
    assert float(fn(np.float32(1.0))) == 2.0
    assert trace_cache.stats["uncached"] == 1 and not os.path.exists(cache_dir)


def test_eviction_removes_the_least_recently_used_entries_down_to_the_bound(tmp_path):
    def evict(directory, limit, keep=None):
        return evict_least_recently_used(directory, limit, trace_cache.SUFFIX, keep=keep)

    for i, name in enumerate(["old", "mid", "new"]):
        path = tmp_path / f"{name}{trace_cache.SUFFIX}"
        path.write_bytes(b"\x00" * 100)
        os.utime(path, ns=(10**9 * (i + 1),) * 2)
    (tmp_path / "other.bin").write_bytes(b"\x00" * 1000)  # not an entry: never counted
    assert evict(str(tmp_path), -1) == 0  # unbounded
    assert evict(str(tmp_path), 250) == 1
    assert sorted(os.listdir(tmp_path)) == ["mid.jflows-trace", "new.jflows-trace", "other.bin"]
    keep = str(tmp_path / f"mid{trace_cache.SUFFIX}")
    assert evict(str(tmp_path), 0, keep=keep) == 1
    assert sorted(os.listdir(tmp_path)) == ["mid.jflows-trace", "other.bin"]


def test_a_store_keeps_the_cache_within_its_bound_and_a_hit_marks_its_entry(
    cache_dir, monkeypatch
):
    x = np.ones(3, np.float32)
    first = trace_cache.cached_jit(lambda a: a + 1, name="first", parts=("first",))
    first(x)
    (entry,) = os.listdir(cache_dir)
    os.utime(os.path.join(cache_dir, entry), ns=(10**9, 10**9))
    trace_cache.cached_jit(lambda a: a + 1, name="first", parts=("first",))(x)  # a hit
    assert os.stat(os.path.join(cache_dir, entry)).st_mtime_ns > 10**9
    monkeypatch.setattr(trace_cache, "max_size", lambda: 1)  # room for the newest entry only
    assert float(trace_cache.cached_jit(lambda a: a * 3, name="second",
                                        parts=("second",))(x)[0]) == 3.0
    assert [name.split("-")[0] for name in os.listdir(cache_dir)] == ["second"]
