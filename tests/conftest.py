import os
import sys

import jax

sys.path.insert(0, os.path.dirname(__file__))

# Unit tests run tiny programs many times over: compile time dominates, so skip most XLA
# optimisation passes (as distrax's CI does). Numerics are unchanged up to rounding.
jax.config.update("jax_disable_most_optimizations", True)
