r"""Affine coupling maths: scale parameterisations and the masked affine update.

A coupling layer keeps part of its input, ``x_a``, unchanged and transforms the rest,

.. math::
    z_b = x_b \odot e^{s(x_a)} + t(x_a),\qquad \log|\det| = \sum s(x_a),

so it is invertible for any conditioner producing ``(t, s)``. The raw scale output of the
conditioner goes through a parameterisation that bounds ``s``:

* ``"tanh"`` (default): ``s = B tanh(r / B)``, a soft clamp to ``(-B, B)`` with slope 1 at 0,
  so a layer starts as ``exp`` would but can never scale by more than ``e^B``;
* ``"sigmoid"`` (Glow): ``e^s = sigmoid(r + 2)``, so ``s < 0`` and the scale starts near 0.88;
* ``"exp"``: ``s = r`` unbounded (RealNVP as written; for comparisons only);
* ``"none"``: additive coupling (NICE), ``s = 0``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jflows.errors import ConfigError

SCALE_MAPS = ("tanh", "sigmoid", "exp", "none")


def check_scale_map(name: str) -> None:
    """Raises ConfigError for an unknown scale parameterisation."""
    if name not in SCALE_MAPS:
        raise ConfigError(f"unknown scale_map {name!r}; choose one of {SCALE_MAPS}")


def log_scale_from_raw(raw: jax.Array, scale_map: str, bound: float) -> jax.Array:
    """Maps the conditioner's raw output to the log-scale ``s`` (see module docstring)."""
    if scale_map == "tanh":
        return bound * jnp.tanh(raw / bound)
    if scale_map == "sigmoid":
        return jax.nn.log_sigmoid(raw + 2.0)
    if scale_map == "exp":
        return raw
    return jnp.zeros_like(raw)


def masked_affine_forward(x, mask, shift, log_scale):
    """``z = m x + (1 - m)(x e^s + t)``; returns ``(z, per-element log-det)``."""
    inv = 1.0 - mask
    s = log_scale * inv
    z = mask * x + inv * (x * jnp.exp(s) + shift)
    return z, s


def masked_affine_inverse(z, mask, shift, log_scale):
    """Inverse of :func:`masked_affine_forward`; returns ``(x, per-element log|dx/dz|)``."""
    inv = 1.0 - mask
    s = log_scale * inv
    x = mask * z + inv * ((z - shift) * jnp.exp(-s))
    return x, -s
