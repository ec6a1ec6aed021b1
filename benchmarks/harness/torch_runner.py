"""The runner of every PyTorch stack (normflows).

A stack's builder returns a :class:`TorchModel`: a module with ``forward_kld(x)`` (normflows'
training loss); :func:`run` seeds torch and numpy, trains it with Adam at ``task.lr`` on the
task's batches (zero_grad, loss, backward and step when the loss is finite, then the stack's
``after_step``, then ``loss.item()``) and scores it in eval mode.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.harness import common


def _same(value):
    return value


@dataclasses.dataclass(frozen=True)
class TorchModel:
    """What :func:`run` trains.

    Attributes:
        model: a ``torch.nn.Module`` with ``forward_kld(batch)``.
        test: the test score of the trained model (called after ``model.eval()``).
        pool: the training pool the batches come from (default ``task.train``).
        batch: a timed transform of each gathered batch (e.g. dequantization).
        after_step: called after every optimiser step (e.g. a spectral-norm refresh).
        loss_to: the train loss as the table shows it (e.g. nats to bits/dim).
    """

    model: Any
    test: Callable[[Any], float]
    pool: np.ndarray | None = None
    batch: Callable[[torch.Tensor], torch.Tensor] = _same
    after_step: Callable[[], None] | None = None
    loss_to: Callable[[float], float] = _same


def run(build: Callable[..., TorchModel], task) -> dict:
    """Seeds, builds the stack's model and optimiser (timed as setup), trains, scores."""
    if task.args.torch_threads:
        torch.set_num_threads(task.args.torch_threads)
    torch.manual_seed(task.seed)
    np.random.seed(task.seed)  # normflows draws its roulette lengths from numpy's global state
    start = time.perf_counter()
    m = build(task)
    opt = torch.optim.Adam(m.model.parameters(), lr=task.lr)
    setup_s = time.perf_counter() - start
    pool = task.train if m.pool is None else m.pool

    def one(i: int) -> float:
        x = m.batch(torch.from_numpy(pool[task.idx[i]]))
        opt.zero_grad()
        loss = m.model.forward_kld(x)
        if torch.isfinite(loss):
            loss.backward()
            opt.step()
        if m.after_step is not None:
            m.after_step()
        return m.loss_to(loss.item())

    times, losses = common.train_loop(one, task.steps)
    params = sum(p.numel() for p in m.model.parameters())
    result = common.summary(
        times, losses, setup_s=setup_s, params=params, torch_threads=torch.get_num_threads()
    )
    m.model.eval()
    result["test"] = m.test(m.model)
    return result
