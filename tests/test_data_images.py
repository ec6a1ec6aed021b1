"""Digits, user .npy arrays, Dataset, vector statistics and the dequantization helpers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from jflows.data import (
    BUILTIN_DATA,
    DIGITS_LEVELS,
    TOY_DENSITIES,
    Dataset,
    bits_per_dim,
    dequantize,
    digits_split_indices,
    load_array,
    load_dataset,
    load_digits_split,
    reduce_bits,
    vector_stats,
)
from jflows.errors import DataError

# ---------------------------------------------------------------- digits


def test_digits_split():
    train, test = load_digits_split()
    assert train.shape == (1500, 8, 8, 1)
    assert test.shape == (297, 8, 8, 1)
    assert train.dtype == test.dtype == np.uint8
    both = np.concatenate([train, test])
    assert both.min() == 0
    assert both.max() == 16
    assert DIGITS_LEVELS == 17
    assert len(np.unique(both)) == 17


def test_digits_split_deterministic_and_disjoint():
    train_idx, test_idx = digits_split_indices()
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(1797))
    np.testing.assert_array_equal(
        np.concatenate([train_idx, test_idx]), np.random.default_rng(0).permutation(1797)
    )
    images = load_digits().images
    train, test = load_digits_split()
    np.testing.assert_array_equal(train[..., 0], images[train_idx])
    np.testing.assert_array_equal(test[..., 0], images[test_idx])
    train[:] = 0  # a caller's copy; the next call is unaffected
    again, _ = load_digits_split()
    np.testing.assert_array_equal(again[..., 0], images[train_idx])


def test_load_dataset_digits():
    ds = load_dataset("digits", seed=123)
    assert (ds.kind, ds.levels, ds.event_shape, ds.dims) == ("image", 17, (8, 8, 1), 64)
    assert ds.is_image
    np.testing.assert_array_equal(ds.test, load_digits_split()[1])
    assert load_dataset("digits", levels=32).levels == 32
    with pytest.raises(DataError, match=r"up to 16.*--levels 17"):
        load_dataset("digits", levels=16)


# ---------------------------------------------------------------- .npy files


def _save(tmp_path, x, name="x.npy"):
    path = tmp_path / name
    np.save(path, x)
    return path


def test_load_vectors_and_images(tmp_path):
    x = load_array(_save(tmp_path, np.random.default_rng(0).normal(size=(10, 3))))
    assert x.dtype == np.float32
    assert x.shape == (10, 3)
    img = np.full((3, 4, 4, 2), 255, np.uint8)
    np.testing.assert_array_equal(load_array(_save(tmp_path, img)), img)
    assert load_array(_save(tmp_path, img - 240), levels=16).dtype == np.uint8


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.npy' does not exist"):
        load_array(tmp_path / "nope.npy")
    with pytest.raises(DataError, match="is a directory"):
        load_array(tmp_path)


@pytest.mark.parametrize("content", [b"not a numpy file at all", b"\x93NUMPY\x01\x00garbage", b""])
def test_unreadable_file(tmp_path, content):
    path = tmp_path / "bad.npy"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"is not a valid \.npy array.*numpy\.save") as err:
        load_array(path)
    assert str(path) in str(err.value) and "allow_pickle" not in str(err.value)


def test_object_array_is_not_unpickled(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a valid .npy array.*object array") as err:
        load_array(path)
    assert "allow_pickle" not in str(err.value)


def test_npz_archive(tmp_path):
    path = tmp_path / "arch.npy"
    with open(path, "wb") as f:
        np.savez(f, a=np.zeros((3, 2)))
    with pytest.raises(DataError, match="npz archive"):
        load_array(path)


@pytest.mark.parametrize(
    ("shape", "hint"),
    [((5,), "rank 1"), ((5, 8, 8), r"x\[\.\.\., None\]"), ((2, 2, 2, 2, 2), "rank 5")],
)
def test_wrong_rank(tmp_path, shape, hint):
    with pytest.raises(DataError, match=r"float \(N, d\) vectors or uint8 \(N, H, W, C\)") as e:
        load_array(_save(tmp_path, np.zeros(shape, np.float32)))
    assert str(shape) in str(e.value)
    e.match(hint)


def test_float_images(tmp_path):
    with pytest.raises(DataError, match=r"must be uint8 .*float64.*astype\(np\.uint8\)"):
        load_array(_save(tmp_path, np.zeros((4, 8, 8, 1))))


def test_other_integer_images(tmp_path):
    with pytest.raises(DataError, match=r"must be uint8 .*int64"):
        load_array(_save(tmp_path, np.zeros((4, 8, 8, 1), np.int64)))


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, bool])
def test_integer_vectors(tmp_path, dtype):
    with pytest.raises(DataError, match=r"vectors must be a float array.*astype\(np\.float32\)"):
        load_array(_save(tmp_path, np.zeros((6, 3), dtype)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(tmp_path, bad):
    x = np.zeros((6, 3))
    x[4, 1] = bad
    with pytest.raises(DataError, match="1 values are NaN or infinite .first in row 4"):
        load_array(_save(tmp_path, x))


def test_float32_overflow(tmp_path):
    x = np.zeros((6, 3))
    x[0, 0] = 1e300
    with pytest.raises(DataError, match="float32 range"):
        load_array(_save(tmp_path, x))


def test_image_values_above_levels_fail_not_clip(tmp_path):
    x = np.zeros((4, 2, 2, 1), np.uint8)
    x[2, 1, 0, 0] = 200
    path = _save(tmp_path, x)
    with pytest.raises(DataError, match=r"up to 200.*levels=17.*--levels 201"):
        load_array(path, levels=17)
    assert load_array(path, levels=201).max() == 200
    with pytest.raises(DataError, match="--levels 201"):
        load_dataset(str(path), levels=64)


@pytest.mark.parametrize("levels", [1, 257, 2.0, True])
def test_bad_levels(tmp_path, levels):
    with pytest.raises(DataError, match="levels must be an integer from 2 to 256"):
        load_array(_save(tmp_path, np.zeros((4, 2, 2, 1), np.uint8)), levels=levels)


@pytest.mark.parametrize("x", [np.zeros((1, 3)), np.zeros((1, 2, 2, 1), np.uint8)])
def test_too_few_rows(tmp_path, x):
    with pytest.raises(DataError, match="at least 2 rows.*got 1"):
        load_array(_save(tmp_path, x))
    assert len(load_array(_save(tmp_path, x), min_rows=1)) == 1  # enough to score (eval)
    with pytest.raises(DataError, match="at least 1 row, got 0"):
        load_array(_save(tmp_path, x[:0]), min_rows=1)


def test_empty_event_axis(tmp_path):
    with pytest.raises(DataError, match="empty event axis"):
        load_array(_save(tmp_path, np.zeros((5, 0))))


# ---------------------------------------------------------------- load_dataset / Dataset


def test_npy_dataset_split(tmp_path):
    x = np.arange(100, dtype=np.float32).reshape(50, 2)
    path = str(_save(tmp_path, x))
    ds = load_dataset(path, seed=1, test_fraction=0.1)
    assert (ds.kind, ds.levels, ds.event_shape, ds.name) == ("vector", None, (2,), path)
    assert (len(ds.train), len(ds.test)) == (45, 5)
    rows = np.concatenate([ds.train, ds.test])[:, 0]
    np.testing.assert_array_equal(np.sort(rows), x[:, 0])  # a partition of the rows
    np.testing.assert_array_equal(ds.test, load_dataset(path, seed=1).test)
    assert not np.array_equal(ds.test, load_dataset(path, seed=2).test)
    tiny = load_dataset(str(_save(tmp_path, x[:2], "tiny.npy")), test_fraction=0.01)
    assert (len(tiny.train), len(tiny.test)) == (1, 1)
    big = load_dataset(str(_save(tmp_path, x[:3], "three.npy")), test_fraction=0.99)
    assert (len(big.train), len(big.test)) == (1, 2)


def test_npy_image_dataset(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(20, 4, 4, 3)).astype(np.uint8)
    ds = load_dataset(str(_save(tmp_path, x)))
    assert (ds.kind, ds.levels, ds.event_shape, ds.dims) == ("image", 256, (4, 4, 3), 48)
    assert ds.train.dtype == np.uint8
    assert (len(ds.train), len(ds.test)) == (18, 2)


def test_npy_vectors_reject_levels(tmp_path):
    with pytest.raises(DataError, match="--levels only applies to uint8 images"):
        load_dataset(str(_save(tmp_path, np.zeros((5, 2)))), levels=17)


def test_unknown_data_name(tmp_path):
    with pytest.raises(DataError, match=r"'mons' \(did you mean 'moons'\?\)") as info:
        load_dataset("mons")
    msg = str(info.value)
    assert all(name in msg for name in BUILTIN_DATA)
    assert "must end in .npy" in msg
    csv = tmp_path / "data.csv"
    csv.write_text("1,2\n3,4\n")
    with pytest.raises(DataError, match="only .npy files"):
        load_dataset(str(csv))


def test_builtin_names():
    from jflows.data import CONDITIONAL_TOYS

    assert (*TOY_DENSITIES, "digits", *CONDITIONAL_TOYS) == BUILTIN_DATA


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_bad_test_fraction(fraction):
    with pytest.raises(DataError, match="test_fraction"):
        load_dataset("moons", test_fraction=fraction)


def test_dataset_invariants():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(DataError, match="kind"):
        Dataset("d", x, x, "table", None, (2,))
    with pytest.raises(DataError, match="levels"):
        Dataset("d", x, x, "vector", 256, (2,))
    with pytest.raises(DataError, match="event_shape"):
        Dataset("d", x, x, "vector", None, (3,))
    assert "array" not in repr(Dataset("d", x, x, "vector", None, (2,)))


# ---------------------------------------------------------------- statistics


def test_vector_stats():
    x = np.array([[0.0, 5.0, 1.0], [2.0, 5.0, 3.0], [4.0, 5.0, 8.0]], np.float32)
    mean, std = vector_stats(x)
    assert all(type(v) is float for v in (*mean, *std))
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-7)
    np.testing.assert_allclose(std, [x[:, 0].std(), 1e-6, x[:, 2].std()], rtol=1e-6)
    with pytest.raises(DataError, match=r"\(N, d\)"):
        vector_stats(np.zeros((2, 2, 2)))


# ---------------------------------------------------------------- dequantization


def test_dequantize_range_and_moments():
    k = jnp.tile(jnp.arange(17, dtype=jnp.uint8), 6000)  # n = 102000
    x = dequantize(jax.random.key(0), k)
    assert x.dtype == jnp.float32
    assert x.shape == k.shape
    u = np.asarray(x, np.float64) - np.asarray(k, np.float64)
    assert u.min() >= 0.0
    assert u.max() < 1.0
    n = u.size
    assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 4 * math.sqrt(1 / 180 / n)  # Var((u - 1/2)^2) = 1/180
    np.testing.assert_array_equal(x, jax.jit(dequantize)(jax.random.key(0), k))
    assert not np.array_equal(x, dequantize(jax.random.key(1), k))


def test_dequantize_never_reaches_next_level(monkeypatch):
    below_one = np.nextafter(np.float32(1), np.float32(0))
    monkeypatch.setattr(
        jax.random, "uniform", lambda key, shape, dtype: jnp.full(shape, below_one, dtype)
    )
    k = jnp.array([0, 1, 128, 255], jnp.uint8)
    assert float(jnp.float32(255) + below_one) == 256.0  # the rounding being guarded against
    x = np.asarray(dequantize(jax.random.key(0), k))
    assert (x < np.asarray(k, np.float32) + 1).all()
    assert (x > np.asarray(k, np.float32)).all()


def test_dequantize_rejects_floats():
    with pytest.raises(DataError, match="integer levels"):
        dequantize(jax.random.key(0), jnp.zeros((3,), jnp.float32))


def test_reduce_bits():
    k = np.arange(256, dtype=np.uint8)
    r, new_levels = reduce_bits(k, 256, 5)
    assert new_levels == 32
    assert r.dtype == np.uint8
    np.testing.assert_array_equal(r, k >> 3)  # Glow: x // 2**(8 - n_bits)
    d = np.arange(17, dtype=np.uint8)
    r, new_levels = reduce_bits(d, 17, 4)
    assert new_levels == 16
    np.testing.assert_array_equal(r, np.floor(d.astype(int) * 16 / 17).astype(np.uint8))
    assert r.max() == 15
    np.testing.assert_array_equal(reduce_bits(d, 17, 1)[0], (d >= 9).astype(np.uint8))


def test_reduce_bits_errors():
    k = np.arange(17, dtype=np.uint8)
    with pytest.raises(DataError, match=r"32 levels, more than the data's 17.*n_bits <= 4"):
        reduce_bits(k, 17, 5)
    with pytest.raises(DataError, match="positive integer"):
        reduce_bits(k, 17, 0)
    with pytest.raises(DataError, match=r"outside 0\.\.15"):
        reduce_bits(k, 16, 2)
    with pytest.raises(DataError, match="integer levels"):
        reduce_bits(k.astype(np.float32), 17, 2)


def test_bits_per_dim_identity():
    """nll in level units / (D ln 2) == -log p_y(y) / (D ln 2) + log2(L) for y = x / L."""
    levels, dims = 17, 64
    rng = np.random.default_rng(0)
    k = rng.integers(0, levels, size=(10, dims))
    x = k + rng.random(size=(10, dims))  # dequantized, in [0, L)
    y = x / levels

    def log_p_y(y):  # a product of triangular densities 2 y on [0, 1)
        return np.sum(np.log(2 * y), axis=-1)

    log_p_x = log_p_y(y) - dims * math.log(levels)  # change of variables x = L y
    papers = -log_p_y(y) / (dims * math.log(2)) + math.log2(levels)
    np.testing.assert_allclose(bits_per_dim(-log_p_x, dims), papers, rtol=1e-12)
    assert bits_per_dim(dims * math.log(256), dims) == pytest.approx(8.0)
    jx = bits_per_dim(jnp.asarray(-log_p_x, jnp.float32), dims)
    np.testing.assert_allclose(jx, papers, rtol=1e-5)
    with pytest.raises(DataError, match="dims"):
        bits_per_dim(1.0, 0)
