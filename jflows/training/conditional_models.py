"""Which models condition on a context: factories that take ``context_shape``.

A conditional run (``jflows train --context C.npy``, or a conditional built-in such as
``conditional-ring``) builds its model with ``context_shape``; a factory without that argument
cannot read a context, and such a run is refused in one line before anything is written.

Example:
    >>> "realnvp" in conditional_models(), "glow" in conditional_models()
    (True, False)
"""

from __future__ import annotations

import inspect

from jflows.errors import ConfigError
from jflows.models import MODELS
from jflows.training.options import check_model


def conditional_models() -> list[str]:
    """The models whose factory takes ``context_shape`` (conditional flows ``p(x | c)``)."""
    return [name for name, factory in MODELS.items()
            if "context_shape" in inspect.signature(factory).parameters]


def check_conditional(model: str, context: str) -> None:
    """Raises ConfigError when ``model``'s factory takes no ``context_shape`` argument.

    Example:
        >>> check_conditional("glow", "c.npy")
        Traceback (most recent call last):
        ...
        jflows.errors.ConfigError: model 'glow' cannot condition on a context ...
    """
    check_model(model)
    if model not in conditional_models():
        raise ConfigError(
            f"model {model!r} cannot condition on a context (its factory takes no "
            f"context_shape), but {context!r} gives one; use one of "
            f"{', '.join(conditional_models())}, or drop --context"
        )
