import os
import subprocess
import sys

import jax

sys.path.insert(0, os.path.dirname(__file__))

# Scripts the tests run in their own processes; --doctest-modules must not import them.
collect_ignore = ["scripts"]

# Tests run tiny programs many times over, so compile time dominates them. Three settings cut
# it, none changes a result beyond rounding: jax_disable_most_optimizations skips most XLA
# optimisation passes (as distrax's CI does); --xla_cpu_use_fusion_emitters=false makes XLA:CPU
# generate its fusions' code with the older element-wise emitter, which compiles faster; and
# --xla_cpu_parallel_codegen_split_count=1 compiles each program's code in one piece rather than
# in parallel parts, which two pytest-xdist workers on two cores only pay for. On a two-core VM,
# `pytest -n 2 -m "not slow"` took 833 s without the two flags (939910a), 572 s with the first
# (03b2865) and 527 s with both (4f68a46). They reach the processes the tests start (the command
# line, the benchmark harness, the multi-device scripts) through the environment. A jaxlib that
# no longer knew an XLA flag would abort at its first compile, so the flags are set only once a
# throwaway process has compiled with them; the probe runs once, in the first pytest process
# (pytest-xdist workers inherit the result).
FAST_COMPILE_XLA_FLAGS = (
    "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
)
_PROBED = "JFLOWS_TEST_XLA_FLAGS_PROBED"


def xla_flags_with(flags: str) -> str:
    """This process's ``XLA_FLAGS`` with ``flags`` appended, for a process a test starts."""
    return f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


def _xla_accepts(flags: str) -> bool:
    """Whether a fresh process with ``flags`` in ``XLA_FLAGS`` compiles and runs a program."""
    env = {**os.environ, "XLA_FLAGS": xla_flags_with(flags)}
    probe = [sys.executable, "-c", "import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"]
    return subprocess.run(probe, env=env, capture_output=True, timeout=120).returncode == 0


if _PROBED not in os.environ:
    os.environ[_PROBED] = "1"
    if FAST_COMPILE_XLA_FLAGS not in os.environ.get("XLA_FLAGS", "") and _xla_accepts(
        FAST_COMPILE_XLA_FLAGS
    ):
        os.environ["XLA_FLAGS"] = xla_flags_with(FAST_COMPILE_XLA_FLAGS)

jax.config.update("jax_disable_most_optimizations", True)
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

# The command line and fit() turn on JAX's persistent compilation cache under ~/.cache by
# default; tests stay hermetic (tests/test_compile_cache.py gives its processes their own).
os.environ.setdefault("JFLOWS_COMPILATION_CACHE", "off")


def once_per_session(tmp_path_factory, name, compute, timeout_s=1200.0):
    """``compute()`` run by one pytest-xdist worker only; every worker gets its (pickled) result.

    Module fixtures that start expensive subprocesses would otherwise run once per worker that
    happens to receive one of the module's tests. The first worker to create the lock directory
    computes; the others wait for the result file in the base directory all workers share.
    """
    import pickle
    import time

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    result, lock = root / f"{name}.pickle", root / f"{name}.lock"
    try:
        lock.mkdir()
        owner = True
    except FileExistsError:
        owner = False
    if not owner:
        deadline = time.monotonic() + timeout_s
        while not result.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no result of {name!r} from another worker in {timeout_s} s")
            time.sleep(0.5)
        ok, value = pickle.loads(result.read_bytes())
        if not ok:
            raise RuntimeError(f"{name!r} failed in another worker: {value}")
        return value
    try:
        value, ok = compute(), True
    except BaseException as err:
        value, ok = repr(err)[-3000:], False
        raise
    finally:
        partial = root / f"{name}.pickle.partial"
        partial.write_bytes(pickle.dumps((ok, value)))
        partial.rename(result)
    return value


# The longest tests (subprocess groups that hold one worker for minutes) are scheduled first, so
# that with two workers the other one works through the short tests meanwhile instead of both
# finishing the session with one of them idle (longest-processing-time-first scheduling).
LONGEST_FIRST = (
    "tests/test_parallel.py", "tests/test_multiprocess.py", "tests/test_notebooks.py",
    "tests/test_cli_kill.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
