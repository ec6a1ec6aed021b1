"""The default optimiser: Adam (or AdamW) with an optional learning-rate schedule and clipping."""

from __future__ import annotations

import math

import optax

from jflows.errors import ConfigError

SCHEDULES = ("constant", "cosine")


def make_optimizer(
    learning_rate: float,
    *,
    steps: int | None = None,
    schedule: str = "constant",
    warmup_steps: int = 0,
    grad_clip: float | None = None,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """Adam with learning rate ``learning_rate``, optionally scheduled, clipped and decayed.

    ``schedule="cosine"`` warms up linearly over ``warmup_steps`` and then decays the rate
    along a cosine to 1% of its peak at step ``steps``; ``"constant"`` keeps the peak after
    the same warm-up. ``grad_clip`` prepends
    ``optax.clip_by_global_norm(grad_clip)``. ``weight_decay > 0`` uses AdamW (decoupled
    decay ``theta <- theta - rate * (adam_update + weight_decay * theta)``, Loshchilov & Hutter).

    Args:
        learning_rate: peak learning rate, positive.
        steps: total number of training steps (needed by ``"cosine"``).
        schedule: ``"constant"`` or ``"cosine"``.
        warmup_steps: length of the linear warm-up from 0 to the peak rate.
        grad_clip: maximum global gradient norm, or None for no clipping.
        weight_decay: AdamW's decoupled weight decay (0: plain Adam).

    Returns:
        An optax transformation.

    Example:
        >>> optimizer = make_optimizer(2e-3, steps=3000, schedule="cosine", grad_clip=10.0)
        >>> params = {"w": jnp.zeros(2)}
        >>> updates, _ = optimizer.update({"w": jnp.ones(2)}, optimizer.init(params), params)
        >>> [round(float(u), 6) for u in updates["w"]]  # Adam's first step: the peak rate, downhill
        [-0.002, -0.002]
    """
    if not (isinstance(learning_rate, int | float) and math.isfinite(learning_rate)) or (
        learning_rate <= 0
    ):
        raise ConfigError(
            f"the learning rate must be a finite positive number, got {learning_rate!r}; pass "
            f"e.g. --lr 1e-3"
        )
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ConfigError(
            f"weight_decay must be a finite number >= 0, got {weight_decay!r}; pass e.g. "
            f"--weight-decay 1e-4 (0 for plain Adam)"
        )
    if not (isinstance(warmup_steps, int) and warmup_steps >= 0):
        raise ConfigError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    if schedule == "constant":
        rate = learning_rate
        if warmup_steps > 0:
            rate = optax.join_schedules(
                [optax.linear_schedule(0.0, learning_rate, warmup_steps),
                 optax.constant_schedule(learning_rate)],
                [warmup_steps],
            )
    elif schedule == "cosine":
        if steps is None or steps < 1:
            raise ConfigError(f"the cosine schedule needs steps >= 1, got {steps!r}")
        warmup = min(max(int(warmup_steps), 0), steps - 1)
        rate = optax.warmup_cosine_decay_schedule(
            init_value=learning_rate if warmup == 0 else 0.0,
            peak_value=learning_rate,
            warmup_steps=warmup,
            decay_steps=steps,
            end_value=0.01 * learning_rate,
        )
    else:
        raise ConfigError(f"unknown learning-rate schedule {schedule!r}; choose one of {SCHEDULES}")
    adam = optax.adamw(rate, weight_decay=weight_decay) if weight_decay > 0 else optax.adam(rate)
    if grad_clip is None:
        return adam
    if not (math.isfinite(grad_clip) and grad_clip > 0):
        raise ConfigError(
            f"grad_clip must be a finite positive number, got {grad_clip!r}; pass e.g. "
            f"--grad-clip 10 (or leave it out for no clipping)"
        )
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam)
