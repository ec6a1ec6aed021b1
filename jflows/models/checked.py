"""Host-level entry point that turns a failed fixed-point inverse into a Python exception.

A residual block whose inverse hits its iteration cap raises
:class:`~jflows.bijectors.InverseNotConvergedError` from a ``jax.debug.callback``. Eagerly
that is the exception itself; under a ``jit`` that you wrote, JAX wraps it in
``JaxRuntimeError``, so ``except InverseNotConvergedError`` would not catch it.
:func:`checked_apply` compiles the call itself, collects the blocks' convergence flags from the
``diagnostics`` collection (a block whose caller collects them does not fire its callback) and
raises the documented exception on the host, so it can be caught as such.
"""

from __future__ import annotations

import collections
from typing import Any

import jax
import numpy as np

from jflows.kernels.fixed_point import FixedPointInfo, InverseNotConvergedError
from jflows.names import DIAGNOSTICS

_STATIC = (int, float, bool, str, type(None))
_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 16


def _is_info(leaf) -> bool:
    return isinstance(leaf, FixedPointInfo)


def _inverse_infos(sown: dict) -> dict[str, FixedPointInfo]:
    """Every sown :class:`FixedPointInfo` of ``sown`` by its path (``.../inverse/0``)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(sown, is_leaf=_is_info)
    infos = {}
    for path, leaf in flat:
        if _is_info(leaf):
            name = "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)
            infos[name] = leaf
    return infos


def _compiled(flow, method: str, statics: tuple, kw_statics: tuple):
    key = (id(flow), method, statics, kw_statics)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is flow:
        _CACHE.move_to_end(key)
        return hit[1]

    def run(variables, arrays, kw_arrays, rngs):
        args, it = [], iter(arrays)
        for is_static, value in statics:
            args.append(value if is_static else next(it))
        kwargs = {**dict(kw_statics), **kw_arrays}
        out, sown = flow.apply(
            variables, *args, method=method, rngs=rngs, mutable=[DIAGNOSTICS], **kwargs
        )
        return out, _inverse_infos(sown.get(DIAGNOSTICS, {}))

    fn = jax.jit(run)
    _CACHE[key] = (flow, fn)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return fn


def check_inverse_infos(infos: dict[str, FixedPointInfo]) -> None:
    """Raises :class:`InverseNotConvergedError` if any block's solve did not converge.

    Example:
        >>> info = FixedPointInfo(iterations=np.int32(1), residual=np.float32(0.02),
        ...                       converged=np.array([True, False]))  # 2 blocks of an nn.scan
        >>> check_inverse_infos({"bijector/block/inverse": info})
        Traceback (most recent call last):
        ...
        jflows.errors.InverseNotConvergedError: the fixed-point inverse of bijector/block (blocks
        [1] of the stack) did not converge: 1 iterations, residual 0.02. Raise inverse_max_iter ...
    """
    failed = []
    for path, info in infos.items():
        converged = np.asarray(info.converged)
        if not np.all(converged):
            blocks = np.flatnonzero(~np.atleast_1d(converged))
            where = path.removesuffix("/inverse").removesuffix("/0")
            if np.ndim(converged):  # stacked by nn.scan: one flag per block
                where += f" (blocks {blocks.tolist()} of the stack)"
            failed.append((where, int(np.max(info.iterations)), float(np.max(info.residual))))
    if failed:
        where, iters, residual = failed[0]
        more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
        raise InverseNotConvergedError(
            f"the fixed-point inverse of {where}{more} did not converge: {iters} iterations, "
            f"residual {residual:.3g}. Raise inverse_max_iter (e.g. --opt inverse_max_iter=1000)"
            " or loosen inverse_atol/inverse_rtol; if the residual stays large, Lip(g) is "
            "probably >= 1 (check with jflows.models.residual_diagnostics)"
        )


def checked_apply(
    flow,
    variables: dict,
    *args: Any,
    method: str = "sample",
    rngs: dict | None = None,
    **kwargs: Any,
) -> Any:
    """A jit-compiled ``flow.apply`` that raises InverseNotConvergedError on the host.

    Runs ``flow.apply(variables, *args, method=method, rngs=rngs, **kwargs)`` and raises
    :class:`~jflows.bijectors.InverseNotConvergedError` if any residual block's fixed-point
    inverse did not converge.

    Python scalars and strings among ``args``/``kwargs`` (``n``, ``temperature``) are static;
    arrays are traced. Compiled functions are cached per flow, method and static arguments, so
    calling it in a loop compiles once. Call it from host code (not inside your own ``jit``).
    Blocks with ``on_nonconvergence="nan"`` still return NaNs; with ``"ignore"`` nothing is
    raised here either.

    Args:
        flow: a :class:`~jflows.models.Flow` (any model; without residual blocks this is just
            a jitted ``apply``).
        variables: its variables.
        *args: positional arguments of ``method``.
        method: the Flow method, e.g. ``"sample"``, ``"inverse"``, ``"inverse_and_log_det"``.
        rngs: RNG streams (``{"sample": key}`` for sampling).
        **kwargs: keyword arguments of ``method``.

    Returns:
        What ``method`` returns.

    Raises:
        InverseNotConvergedError: naming the block, its iterations and residual.

    Example:
        >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
        >>> variables = flow.init(key, jnp.zeros((1, 2)))
        >>> checked_apply(flow, variables, 5, rngs={"sample": key}).shape  # 5 samples
        (5, 2)

        With a residual flow whose inverse cannot converge (``inverse_max_iter=1``, say) the
        same call raises the error of :func:`check_inverse_infos`.
    """
    statics = tuple((isinstance(a, _STATIC), a if isinstance(a, _STATIC) else None) for a in args)
    arrays = [a for a in args if not isinstance(a, _STATIC)]
    kw_statics = tuple(sorted((k, v) for k, v in kwargs.items() if isinstance(v, _STATIC)))
    kw_arrays = {k: v for k, v in kwargs.items() if not isinstance(v, _STATIC)}
    fn = _compiled(flow, method, statics, kw_statics)
    out, infos = fn(variables, arrays, kw_arrays, rngs or {})
    check_inverse_infos(jax.device_get(infos))
    return out
