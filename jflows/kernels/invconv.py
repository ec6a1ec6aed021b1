r"""Invertible 1x1 convolution (Glow): a learned ``C x C`` matrix applied at every pixel.

For channels-last ``x`` of shape ``(..., H, W, C)``, ``z = x W^T`` (each pixel's channel
vector is multiplied by ``W``) and

.. math:: \log|\det| = H W \log|\det W|.

Two parameterisations:

* plain: ``W`` itself, with ``slogdet`` (``O(C^3)``);
* LU: ``W = P L (U + \mathrm{diag}(\sigma e^{\ell}))`` with a fixed permutation ``P``, unit
  lower-triangular ``L``, strictly upper-triangular ``U``, fixed signs ``\sigma`` and learned
  log-magnitudes ``\ell``; then ``\log|\det W| = \sum_i \ell_i``, and ``W`` can never become
  singular.

Both start from a random rotation (``Q`` of the QR decomposition of a Gaussian matrix).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_rotation(key: jax.Array, channels: int, dtype=jnp.float32) -> jax.Array:
    """A random orthogonal ``C x C`` matrix (Haar-distributed: ``Q`` with ``diag(R) > 0``)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (channels, channels), dtype))
    return q * jnp.sign(jnp.diagonal(r))[None, :]


def lu_decompose(w: jax.Array) -> tuple[dict, dict]:
    """LU decomposition with partial pivoting, ``W = P L U``, in the parameterisation above.

    Returns:
        ``(trained, fixed)``: ``trained = {"lower", "upper", "log_s"}`` (strictly lower part of
        ``L``, strictly upper part of ``U``, ``log|diag U|``) and ``fixed = {"perm", "sign"}``
        (``P = eye(C)[perm]`` as an int array, and ``sign(diag U)``).
    """
    p, lower, upper = jax.scipy.linalg.lu(w)
    diag = jnp.diagonal(upper)
    trained = {
        "lower": jnp.tril(lower, -1),
        "upper": jnp.triu(upper, 1),
        "log_s": jnp.log(jnp.abs(diag)),
    }
    return trained, {"perm": jnp.argmax(p, axis=1), "sign": jnp.sign(diag)}


def lu_weight(trained: dict, fixed: dict) -> jax.Array:
    """Assembles ``W = P L U`` from the factors returned by :func:`lu_decompose`."""
    lower = trained["lower"]
    eye = jnp.eye(lower.shape[-1], dtype=lower.dtype)
    l_mat = jnp.tril(lower, -1) + eye
    diag = fixed["sign"].astype(lower.dtype) * jnp.exp(trained["log_s"])
    u_mat = jnp.triu(trained["upper"], 1) + jnp.diag(diag)
    return eye[fixed["perm"]] @ (l_mat @ u_mat)


def conv1x1(x: jax.Array, w: jax.Array) -> jax.Array:
    """Applies ``W`` to the channel vector of every pixel: ``z = x W^T``."""
    return jnp.einsum("...c,dc->...d", x, w)


def pixels_per_event(x: jax.Array) -> int:
    """``H * W`` of channels-last images ``(..., H, W, C)``."""
    return x.shape[-3] * x.shape[-2]
