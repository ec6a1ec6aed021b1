"""Where a ``Stack`` unrolls its ``nn.scan``: training applies only, not ``init`` or evaluation.

Unrolling repeats the block's code once per block in the compiled program. That pays in a
training step on CPU (convolution-kernel gradients inside a compiled loop are slow), but
``init`` runs once and an evaluation model computes no kernel gradients, so both compile a
rolled loop: for benchmark W4 (8 convolutional residual blocks) ``init`` compiles about 2.5x
faster and an evaluation step about 3x faster, with less peak memory, and the evaluation runs
as fast (``benchmarks/README.md``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend.core import jaxprs_in_params

import jflows.models as jm
from jflows.bijectors import Stack


def _scan_unrolls(jaxpr) -> list:
    """The ``unroll`` parameter of every ``scan`` in a jaxpr (nested ones included)."""
    found = []
    for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
        if eqn.primitive.name == "scan":
            found.append(eqn.params["unroll"])
        for sub in jaxprs_in_params(eqn.params):
            found += _scan_unrolls(sub)
    return found


def _stacks(layer) -> list[Stack]:
    out = [layer] if isinstance(layer, Stack) else []
    for sub in layer.sublayers():
        out += _stacks(sub)
    return out


def test_init_scans_the_blocks_rolled_but_training_applies_unroll():
    flow = jm.resflow((4, 4, 1), n_blocks=3, hidden=4, n_scales=1, fc_blocks=0, unroll=True)
    x = jnp.full((2, 4, 4, 1), 0.5)
    rngs = {"params": jax.random.key(0), "logdet": jax.random.key(1)}
    init = jax.make_jaxpr(lambda: flow.init(rngs, x, method="log_prob"))()
    assert _scan_unrolls(init) == [1]
    variables = flow.init(rngs, x, method="log_prob")
    apply = jax.make_jaxpr(
        lambda v: flow.apply(v, x, method="log_prob", rngs={"logdet": jax.random.key(2)})
    )(variables)
    assert _scan_unrolls(apply) == [3]


def test_evaluation_models_scan_their_convolutional_blocks_rolled():
    train = jm.resflow((4, 4, 1), n_blocks=3, hidden=4, unroll=True)
    evaluation = jm.resflow((4, 4, 1), n_blocks=3, hidden=4, unroll=True, training=False)
    unrolls = lambda flow: [repr(s.unroll) for s in _stacks(flow.bijector) if s.length == 3]  # noqa: E731
    assert unrolls(train) == ["True", "True"]
    assert unrolls(evaluation) == ["1", "1"]
