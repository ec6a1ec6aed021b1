"""What a workload prints: the machine and versions, one table per data set, the goal lines."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform

import numpy as np

NOT_INSTALLED = "not installed (pip install -e '.[bench]')"
VERSIONS = "jax jaxlib flax optax numpy scikit-learn torch normflows flowjax equinox distrax"


def machine_header() -> str:
    """Platform, CPU model, cores, load average, Python and the versions of ``VERSIONS``."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    vers = []
    for name in VERSIONS.split():
        try:
            vers.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            vers.append(f"{name} -")
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return (
        f"machine: {platform.platform()}; CPU {cpu}; {os.cpu_count()} cores "
        f"({usable} usable); load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
        f"python {platform.python_version()}; " + ", ".join(vers)
    )


def fmt(value, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN" if isinstance(value, float) else "-"
    return format(value, spec)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(row):  # first column left-aligned, the others right-aligned
        return "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        )

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def standard_rows(results: dict[str, dict], labels: dict[str, str], score: str) -> tuple:
    """Table headers and rows shared by the workloads; ``score`` names the test column."""
    headers = ["stack", "ms/step", "p10-p90", "first step ms", "setup s"]
    headers += ["peak RSS MB train/end", "params", score, "train loss end"]
    rows = []
    for stack, r in results.items():
        label = labels.get(stack, stack)
        if r.get("torch_threads"):
            label += f" ({r['torch_threads']} torch thr.)"
        if r["status"] == "missing":
            rows.append([label, NOT_INSTALLED] + [""] * (len(headers) - 2))
            continue
        if r["status"] != "ok":
            rows.append([label, f"failed: {r.get('error', '')[:150]}"] + [""] * 7)
            continue
        rows.append(
            [
                label,
                fmt(r["median_ms"]),
                f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}",
                fmt(r["first_ms"], ".0f"),
                fmt(r.get("setup_s"), ".2f"),
                f"{r['rss_train_mb']:.0f} / {r['rss_end_mb']:.0f}",
                f"{r['params']:,}",
                fmt(r.get("test"), ".3f"),
                fmt(r.get("loss_end"), ".3f"),
            ]
        )
    return headers, rows


def seed_means(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
    """Per stack, what the goal lines compare over seeds.

    The median over seeds of its median ms/step, the largest peak RSS of training and, with
    several seeds, the test score's mean (``test``) and standard error (``test_se``).
    """
    out: dict[str, dict] = {}
    for stack in per_seed[0]:
        runs = [r[stack] for r in per_seed if r.get(stack, {}).get("status") == "ok"]
        if len(runs) == len(per_seed):
            out[stack] = {"status": "ok",
                          "median_ms": float(np.median([r["median_ms"] for r in runs])),
                          "rss_train_mb": max(r["rss_train_mb"] for r in runs)}
            scores = [r.get("test") for r in runs]
            if len(runs) > 1 and all(v is not None for v in scores):
                out[stack]["test"] = float(np.mean(scores))
                out[stack]["test_se"] = float(np.std(scores, ddof=1) / np.sqrt(len(scores)))
        else:
            out[stack] = {"status": "failed"}
    return out


def seed_rows(per_seed: list[dict[str, dict]], labels: dict[str, str], score: str) -> tuple:
    """Headers and rows over seeds: ms/step, mean ``score``, its standard error, per seed.

    ms/step is the median of the seeds' medians; the standard error is the sample standard
    deviation over seeds divided by sqrt(number of seeds).
    """
    headers = ["stack", "ms/step (median over seeds)", f"{score} mean", "s.e. over seeds",
               "per seed"]
    rows = []
    for stack in per_seed[0]:
        label = labels.get(stack, stack)
        runs = [r.get(stack, {}) for r in per_seed]
        if any(r.get("status") != "ok" for r in runs):
            rows.append([label, "did not run on every seed", "", "", ""])
            continue
        scores = [r.get("test") for r in runs]
        if any(v is None for v in scores):
            rows.append([label, fmt(float(np.median([r["median_ms"] for r in runs]))),
                         "-", "-", "-"])
            continue
        mean = float(np.mean(scores))
        se = float(np.std(scores, ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else 0.0
        rows.append([label, fmt(float(np.median([r["median_ms"] for r in runs]))),
                     f"{mean:.4f}", f"{se:.4f}", ", ".join(f"{v:.4f}" for v in scores)])
    return headers, rows


def speedup(results: dict[str, dict], slow: str, fast: str = "jflows") -> float | None:
    """``median(slow) / median(fast)``, or None when either did not run."""
    a, b = results.get(slow, {}), results.get(fast, {})
    if a.get("status") != "ok" or b.get("status") != "ok":
        return None
    return a["median_ms"] / b["median_ms"]


def goal_line(text: str, value: float | None, goal: float, higher_is_better: bool = True) -> str:
    if value is None:
        return f"  {text}: - (a stack did not run)"
    met = value >= goal if higher_is_better else value <= goal
    return (
        f"  {text}: {value:.2f} (goal {'>=' if higher_is_better else '<='} {goal:g}: "
        f"{'met' if met else 'NOT met'})"
    )
