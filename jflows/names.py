"""Names of the variable collections and RNG streams, defined once.

Every module refers to these constants; no other file spells the strings.

Collections:
    PARAMS: trainable parameters.
    LIPSCHITZ: power-iteration vectors of spectrally normalised layers. They are only
        rewritten when a caller passes ``mutable=[LIPSCHITZ]`` to ``apply`` (the training step
        does so once per step); otherwise the stored vectors are used as they are.
    CONSTANTS: values fixed at initialisation and never trained (the permutation and signs of
        an LU-parameterised 1x1 convolution).

RNG streams (which layer draws from which is declared by the layer itself,
``Layer.own_rng_streams``; the training steps supply exactly the model's declared streams):
    PARAMS: initialisation.
    LOGDET: stochastic log-determinant estimators (Hutchinson probes, roulette draws).
    SAMPLE: drawing from a base distribution (and the generative draws of surjections).
    DEQUANT: dequantization noise for discrete data (uniform or variational).
    NOISE: the data-to-latent draws of other stochastic layers (augmentation, stochastic
        permutations, continuous indices).
"""

PARAMS = "params"
LIPSCHITZ = "lipschitz"

LOGDET = "logdet"
SAMPLE = "sample"
DEQUANT = "dequant"
NOISE = "noise"

# Values fixed at initialisation that belong to the model but are never trained, such as the
# permutation and signs of an LU-parameterised 1x1 convolution. Saved with the parameters;
# no optimizer sees them.
CONSTANTS = "constants"

# Per-call diagnostics sown by layers (e.g. the fixed-point inverse's iterations, residual and
# convergence flag per residual block). Collected by applying with ``mutable=[DIAGNOSTICS]``.
DIAGNOSTICS = "diagnostics"

COLLECTIONS = (LIPSCHITZ, CONSTANTS, DIAGNOSTICS)
"""Every collection besides ``params`` that jflows' own layers create (stacked per block)."""
