"""The default optimiser: Adam with an optional learning-rate schedule and gradient clipping."""

from __future__ import annotations

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
) -> optax.GradientTransformation:
    """Adam with learning rate ``learning_rate``, optionally scheduled and clipped.

    ``schedule="cosine"`` warms up linearly over ``warmup_steps`` and then decays the rate
    along a cosine to 1% of its peak at step ``steps``. ``grad_clip`` prepends
    ``optax.clip_by_global_norm(grad_clip)``.

    Args:
        learning_rate: peak learning rate, positive.
        steps: total number of training steps (needed by ``"cosine"``).
        schedule: ``"constant"`` or ``"cosine"``.
        warmup_steps: linear warm-up length of the cosine schedule.
        grad_clip: maximum global gradient norm, or None for no clipping.

    Returns:
        An optax transformation.

    Example:
        >>> optimizer = make_optimizer(2e-3, steps=3000, schedule="cosine", grad_clip=10.0)
    """
    if not learning_rate > 0:
        raise ConfigError(f"the learning rate must be positive, got {learning_rate!r}")
    if schedule == "constant":
        rate = learning_rate
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
    adam = optax.adam(rate)
    if grad_clip is None:
        return adam
    if not grad_clip > 0:
        raise ConfigError(f"grad_clip must be positive, got {grad_clip!r}")
    return optax.chain(optax.clip_by_global_norm(grad_clip), adam)
