"""raymeta's ScaML-GP vs the authors' research implementation, on identical studies.

    python jobs/bench_scamlgp_reference.py
        [--families branin,hartmann3] [--seeds 32] [--first-seed 0]
        [--num-meta 8] [--n-meta 32] [--budget 40] [--methods raymeta,reference]
        [--reference-python PATH] [--out bench-results] [--summary-only]

Per (family, seed) both methods get the same study (``draw_study``): the same
meta-data (the driver receives ``study.meta_tasks`` X and y, see
:func:`driver_client.driver_problem`), the same target task and the same
observation-noise stream ``default_rng([seed, 2])``, one noisy observation per step,
exactly as ``raymeta.gp.benchmark.run_bo`` draws it; regret is on the noise-free value.

The reference (AGPL-3.0, never copied here) runs in its own venv through
``jobs/scamlgp_reference_driver.py`` (line-based JSON over stdin/stdout). Install it
outside the repository per ``shared/design/benchmarks.md`` section 3 and point
``--reference-python`` (default: ``$RAYMETA_SCAMLGP_REFERENCE_PYTHON``) at that
venv's python; without it the reference method is skipped with a message.

CPU seconds per study: for the reference, the driver process's ``process_time`` at
its end (imports, meta-fit and loop; the import share is stored as
``import_cpu_seconds``); for raymeta, this process's CPU time of ``fit_meta_tasks``
plus ``run_bo``. Rows go to the ``benchmarks`` table of ``<out>/store`` (experiment
``scamlgp_reference``) as each study finishes; finished (family, seed, method) are
skipped on a rerun. Driver stderr goes to ``<out>/scamlgp_reference_logs/``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from driver_client import DriverSession, driver_problem

from raymeta.gp.benchmark import compare_methods, run_bo, simple_regret
from raymeta.results import ResultStore
from raymeta.results.benchmark import record_benchmark, stored_runs
from raymeta.search.fitting import fit_meta_tasks
from raymeta.tasks.bo import FAMILIES, Study, draw_study

BENCH = "scamlgp_reference"
METHODS = ("raymeta", "reference")
DEFAULT_FAMILIES = ("branin", "hartmann3")
STEPS = (5, 10, 20, 40)
DUPLICATE_TOL = 1e-3
ENV_PYTHON = "RAYMETA_SCAMLGP_REFERENCE_PYTHON"
DRIVER = Path(__file__).resolve().parent / "scamlgp_reference_driver.py"
INSTALL_HINT = (
    "The ScaML-GP reference implementation is not available. Install it OUTSIDE this "
    "repository (AGPL-3.0) per shared/design/benchmarks.md section 3: python3 -m venv "
    "/work/scratch/scamlgp-ref-venv; pip install torch==2.13.0; pip install "
    "botorch==0.7.3 gpytorch==1.9.0 linear-operator==0.2.0 blackboxopt==5.0.3 "
    'parameterspace==0.10.0 "numpy<2" scipy==1.12.0 pandas matplotlib; pip install '
    '"setuptools<81"; pip install --no-deps --ignore-requires-python <source dir>; '
    f"then pass --reference-python <venv>/bin/python or set {ENV_PYTHON}."
)


@dataclass
class StudyRun:
    """One study run by one method: proposals, regrets and cost."""

    X: np.ndarray
    regret: np.ndarray
    cpu_seconds: float
    extra: dict[str, float] = field(default_factory=dict)
    outputscale: list[float] = field(default_factory=list)


def make_observer(study: Study) -> Callable[[np.ndarray], tuple[float, float]]:
    """``x -> (noisy observation, noise-free value)``, with run_bo's noise stream."""
    noise = np.random.default_rng([study.seed, 2])

    def observe(x: np.ndarray) -> tuple[float, float]:
        x = np.asarray(x, dtype=np.float64)
        return float(study.target(x[None], noise)[0]), float(study.target(x[None])[0])

    return observe


def near_duplicates(X: np.ndarray, tol: float = DUPLICATE_TOL) -> int:
    """Points within ``tol`` (Euclidean) of an earlier point."""
    X = np.asarray(X, dtype=np.float64)
    dist = np.linalg.norm(X[:, None] - X[None], axis=-1)
    return int(sum(np.any(dist[i, :i] < tol) for i in range(1, len(X))))


def reference_available(python: str | None) -> bool:
    """Whether ``python`` exists and imports the authors' ``scamlgp.optimizer``."""
    if not python or not Path(python).exists():
        return False
    probe = [python, "-c", "import scamlgp.optimizer"]
    return subprocess.run(probe, capture_output=True, timeout=300).returncode == 0


def run_raymeta(study: Study, budget: int, f_star: float) -> StudyRun:
    """raymeta's ScaML-GP on ``study`` (serial meta-fit, no Ray)."""
    cpu0 = time.process_time()
    states = fit_meta_tasks(study.meta_tasks, seed=study.seed, num_workers=0)
    fit_cpu = time.process_time() - cpu0
    res = run_bo(study, "scamlgp", states, budget=budget, f_star=f_star)
    extra = {"meta_fit_cpu_seconds": fit_cpu, "cpu_seconds_loop": res.cpu_seconds}
    return StudyRun(res.X, res.regret, time.process_time() - cpu0, extra)


def run_reference(
    study: Study, budget: int, f_star: float, python: str, log: Path
) -> StudyRun:
    """The authors' ScaML-GP on ``study``, driven through the JSON protocol."""
    observe = make_observer(study)
    xs, values = [], []
    session = DriverSession(
        python, DRIVER, log, {**driver_problem(study), "budget": budget}
    )
    ready = session.ready
    for _ in range(budget):
        x = np.asarray(session.receive()["x"], dtype=np.float64)
        y, value = observe(x)
        session.send({"y": y})
        xs.append(x)
        values.append(value)
    done = session.receive()
    session.close()
    extra = {
        "meta_fit_cpu_seconds": ready["meta_fit_cpu_seconds"],
        "import_cpu_seconds": done["import_cpu_seconds"],
        "final_outputscale": done["outputscale"][-1],
        "final_noise": done["noise"],
        "final_weight_max": max(done["weights"]),
        "final_weights_below_1e-3": float(np.sum(np.array(done["weights"]) < 1e-3)),
    }
    regret = simple_regret(values, f_star)
    return StudyRun(
        np.array(xs), regret, done["cpu_seconds"], extra, done["outputscale"]
    )


def study_rows(family: str, method: str, seed: int, run: StudyRun) -> list[dict]:
    """Per-step regret, proposals and residual outputscale; per-study figures."""
    key = {"family": family, "method": method, "seed": seed}
    rows = [
        {**key, "step": t + 1, "metric": "regret", "value": float(r)}
        for t, r in enumerate(run.regret)
    ]
    rows += [
        {**key, "step": t + 1, "metric": f"x{j}", "value": float(v)}
        for t, x in enumerate(run.X)
        for j, v in enumerate(x)
    ]
    rows += [
        {**key, "step": t + 1, "metric": "outputscale", "value": float(v)}
        for t, v in enumerate(run.outputscale)
    ]
    figures = {
        "cpu_seconds_study": run.cpu_seconds,
        "near_duplicates": float(near_duplicates(run.X)),
        **run.extra,
    }
    return rows + [{**key, "metric": k, "value": float(v)} for k, v in figures.items()]


def done_keys(store: ResultStore) -> set[tuple[str, int, str]]:
    """(family, seed, method) already stored."""
    return stored_runs(store, BENCH)


def run_family(store: ResultStore, family: str, args, done: set) -> None:
    """Run the missing (seed, method) studies of ``family`` and store each at once."""
    logs = Path(args.out) / "scamlgp_reference_logs"
    logs.mkdir(parents=True, exist_ok=True)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        todo = [m for m in args.methods if (family, seed, m) not in done]
        if not todo:
            continue
        study = draw_study(
            FAMILIES[family], seed=seed, num_meta=args.num_meta, n_meta=args.n_meta
        )
        f_star = study.target.optimum()
        for method in todo:
            t0 = time.perf_counter()
            if method == "raymeta":
                run = run_raymeta(study, args.budget, f_star)
            else:
                log = logs / f"{family}-{seed}.log"
                run = run_reference(study, args.budget, f_star, args.python, log)
            record_benchmark(store, BENCH, study_rows(family, method, seed, run))
            print(
                f"{family} seed={seed} {method}: "
                f"regret@{min(10, args.budget)}={run.regret[:10][-1]:.4g} "
                f"@{args.budget}={run.regret[-1]:.4g} cpu={run.cpu_seconds:.1f}s "
                f"wall={time.perf_counter() - t0:.1f}s load={os.getloadavg()[0]:.2f} "
                f"dups={near_duplicates(run.X)}",
                flush=True,
            )


def _paired_seeds(df, family: str) -> list[int]:
    sub = df[(df.family == family) & (df.metric == "regret")]
    seeds = [set(sub[sub.method == m].seed) for m in METHODS]
    return sorted(set.intersection(*seeds)) if all(seeds) else []


def _paired(df, family: str) -> dict[str, np.ndarray]:
    sub = df[(df.family == family) & (df.metric == "regret")]
    sub = sub[sub.seed.isin(_paired_seeds(df, family))]
    return {
        m: g.pivot_table(index="seed", columns="step", values="value")
        .sort_index()
        .to_numpy()
        for m, g in sub.groupby("method")
    }


def _per_study(df, family: str, metric: str) -> dict[str, np.ndarray]:
    sub = df[(df.family == family) & (df.metric == metric)]
    sub = sub[sub.seed.isin(_paired_seeds(df, family))]
    return {m: g.sort_values("seed").value.to_numpy() for m, g in sub.groupby("method")}


def summarise(store: ResultStore, families: list[str]) -> None:
    """Print median regret with CIs, paired comparison and costs per family."""
    from scipy.stats import wilcoxon

    if "benchmarks" not in store.tables():
        print("no results stored yet")
        return
    df = store.to_pandas("benchmarks", filters=[("experiment", "=", BENCH)])
    for family in families:
        regrets = _paired(df, family)
        if len(regrets) < 2:
            print(f"== {family}: no paired studies yet")
            continue
        a, b = regrets["raymeta"], regrets["reference"]
        stats = compare_methods(regrets, steps=STEPS)
        print(f"== {family} ({len(a)} paired seeds; median regret [95% bootstrap CI])")
        print(f"  {'T':>4} " + "".join(f"{m:>34}" for m in METHODS))
        for t in (s for s in STEPS if s <= a.shape[1]):
            cells = [
                f"{stats[f'median_regret@{t}/{m}']:.4g} "
                f"[{stats[f'median_regret_ci_lo@{t}/{m}']:.3g}, "
                f"{stats[f'median_regret_ci_hi@{t}/{m}']:.3g}]"
                for m in METHODS
            ]
            print(f"  {t:>4} " + "".join(f"{c:>34}" for c in cells))
        last, diff = a.shape[1], a[:, -1] - b[:, -1]
        p = (
            wilcoxon(a[:, -1], b[:, -1], alternative="greater").pvalue
            if np.any(diff != 0)
            else float("nan")
        )
        print(f"  studies where raymeta is worse at T={last}: {int(np.sum(diff > 0))}")
        print(f"  ties at T={last}: {int(np.sum(diff == 0))}")
        print(f"  one-sided paired Wilcoxon p (raymeta worse @{last}): {p:.4g}")
        for m in METHODS:
            print(
                f"  {m}: mean cum. regret {stats[f'mean_cum_regret/{m}']:.4g} "
                f"+- {stats[f'sem_cum_regret/{m}']:.3g} (SEM)"
            )
        _print_per_study(df, family)


def _print_per_study(df, family: str) -> None:
    cpu = _per_study(df, family, "cpu_seconds_study")
    dups = _per_study(df, family, "near_duplicates")
    for m in METHODS:
        if m in cpu:
            print(
                f"  {m}: median CPU-s/study {np.median(cpu[m]):.1f} "
                f"(paired studies); near-duplicate proposals (<{DUPLICATE_TOL}) "
                f"total {int(dups[m].sum())}, in {int(np.sum(dups[m] > 0))} studies"
            )
    scale = _per_study(df, family, "final_outputscale").get("reference")
    if scale is not None:
        q = np.quantile(scale, [0, 0.5, 1])
        print(
            f"  reference final residual outputscale: min {q[0]:.3g} median "
            f"{q[1]:.3g} max {q[2]:.3g}; at the 1e-4 bound in "
            f"{int(np.sum(scale < 1.01e-4))}/{len(scale)} studies"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(DEFAULT_FAMILIES))
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--num-meta", type=int, default=8)
    parser.add_argument("--n-meta", type=int, default=32)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--reference-python", default=os.environ.get(ENV_PYTHON))
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    args.methods = args.methods.split(",")
    args.families = args.families.split(",")
    args.python = args.reference_python
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    store = ResultStore(Path(args.out) / "store")
    if not args.summary_only:
        if "reference" in args.methods and not reference_available(args.python):
            print(INSTALL_HINT, file=sys.stderr)
            args.methods = [m for m in args.methods if m != "reference"]
        done = done_keys(store)
        for family in args.families:
            run_family(store, family, args, done)
    summarise(store, args.families)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
