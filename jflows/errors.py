"""Exceptions raised by jflows, each with a message that names the value and the fix."""


class JflowsError(Exception):
    """Base class of every error jflows raises on purpose."""


class MissingRngError(JflowsError, ValueError):
    """A method needs an RNG stream that the caller did not supply."""

    def __init__(self, stream: str, where: str):
        super().__init__(
            f"{where} needs the {stream!r} RNG stream, but apply() was not given one. "
            f"Pass rngs={{{stream!r}: jax.random.key(...)}} to apply/init "
            f"(jflows never falls back to another stream)."
        )
        self.stream = stream


class ShapeError(JflowsError, ValueError):
    """An input's shape does not match what the bijector or model expects."""


class ConfigError(JflowsError, ValueError):
    """A constructor argument is out of range or inconsistent."""


class NotBijectiveError(ConfigError):
    """A bijection-only operation (an exact inverse log-det) was asked of a surjection."""


class DataError(JflowsError, ValueError):
    """Data that cannot be used as given (wrong rank, dtype, non-finite, out of range)."""


class CheckpointError(JflowsError, RuntimeError):
    """A run directory or checkpoint that cannot be read or does not match the request."""


class RunLockedError(CheckpointError):
    """Another process holds the lock of a run directory (it is training there)."""


class InverseNotConvergedError(JflowsError, RuntimeError):
    """A fixed-point solve (the inverse of a residual block, or its adjoint) hit its cap."""


class TrainingDivergedError(JflowsError, RuntimeError):
    """Training ended with non-finite figures or mostly skipped (non-finite) steps.

    Raised by :func:`jflows.training.fit` after the run's files are written; ``jflows train``
    prints its message and exits with code 3. ``record`` holds the run's final figures.
    """

    def __init__(self, message: str, record: dict | None = None):
        super().__init__(message)
        self.record = record or {}


class UnfingerprintableError(JflowsError, TypeError):
    """An object whose content cannot be fingerprinted, so the trace cache does not cache it.

    Raised by :func:`jflows.training.fingerprint.fingerprint`; callers that cache treat it as
    "compile as usual", never as a failure of training.
    """
