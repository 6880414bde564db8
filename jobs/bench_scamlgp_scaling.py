"""ScaML-GP scaling: meta-fit vs M, the team cache, proposal latency, study cost.

    python jobs/bench_scamlgp_scaling.py [--ms 128,1000,10000] [--n-meta 32]
        [--latency-ms 128,1000,10000] [--latency-n 40] [--grow 100]
        [--ray-m 128] [--icm-ms 8,32,64] [--out bench-results]

Figures (printed and appended to the ``benchmarks`` table of ``<out>/store``):

1. Meta-fit CPU and wall seconds per M, serial in-process (torch 1 thread), each M
   into a fresh results store as a first study would (fits plus one keyed append
   per state), with the R^2 of a line through them.
2. The team cache at the largest M: a second study on the same store (meta
   preparation = reading and checking the M cached states; nothing is fitted), its
   share of the first study's, and a store that gained ``--grow`` tasks (only those
   are fitted).
3. Median proposal latency (wall and CPU, 5 proposals) at each of ``--latency-ms``
   with n=``--latency-n`` target points, the tasks left after screening and pruning,
   the memory of the cached meta posteriors (M n^2 floats) and the peak RSS.
4. CPU seconds of a full 40-step Branin study with M=8 (meta-fit + 40 proposals).
5. The ICM multi-task GP baseline: one marginal-likelihood evaluation on all points
   for each of ``--icm-ms``, the log-log slope, and its extrapolation to every M.
6. Wall time of the Ray-parallel fit of ``--ray-m`` tasks with 1 and 2 workers.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

from raymeta.gp.benchmark import icm_mll_seconds, run_bo
from raymeta.gp.propose import propose
from raymeta.results import ResultStore
from raymeta.results.benchmark import record_benchmark
from raymeta.search.fitting import FitReport, fit_meta_tasks
from raymeta.tasks.bo import FAMILIES, draw_study
from raymeta.tasks.data import TaskData

BENCH = "scamlgp_scaling"


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def r_squared(x, y) -> float:
    coef = np.polyfit(x, y, 1)
    resid = np.asarray(y) - np.polyval(coef, x)
    return float(1 - resid.var() / np.var(y))


class Figures:
    """Collects figures, printing each as it comes."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def emit(self, metric: str, value: float, **extra) -> None:
        print(f"{metric} {extra or ''} = {value:.4g}", flush=True)
        self.rows.append(
            {"family": "branin", "metric": metric, "value": float(value), **extra}
        )


def meta_fit_vs_m(pool, ms, scratch: Path, out: Figures) -> dict:
    """Section 1: each M fitted into a fresh store; returns states and stores."""
    by_m, cpu = {}, []
    for m in ms:
        store = ResultStore(scratch / f"first-{m}")
        states, wall, c = timed(
            lambda m=m, store=store: fit_meta_tasks(
                pool[:m], seed=0, num_workers=0, store=store
            )
        )
        by_m[m] = (states, store, c)
        cpu.append(c)
        out.emit("meta_fit_cpu_s", c, step=m)
        out.emit("meta_fit_wall_s", wall, step=m)
    if len(ms) > 2:
        out.emit("meta_fit_cpu_r2_linear", r_squared(ms, cpu))
        out.emit("meta_fit_cpu_s_per_task", float(np.polyfit(ms, cpu, 1)[0]))
    return by_m


def team_cache(pool, m: int, first, grow: int, out: Figures) -> None:
    """Section 2: a second study on the same store, then a store grown by ``grow``."""
    _, store, first_cpu = first
    report = FitReport()
    _, wall, c = timed(
        lambda: fit_meta_tasks(
            pool[:m], seed=0, num_workers=0, store=store, report=report
        )
    )
    out.emit("second_study_meta_prep_cpu_s", c, step=m)
    out.emit("second_study_meta_prep_wall_s", wall, step=m)
    out.emit("second_study_store_read_s", report.store_read_s, step=m)
    out.emit("second_study_fitted", float(report.fitted), step=m)
    out.emit("second_study_share_of_first", c / first_cpu, step=m)
    grown = FitReport()
    _, wall, c = timed(
        lambda: fit_meta_tasks(
            pool[: m + grow], seed=0, num_workers=0, store=store, report=grown
        )
    )
    out.emit("grown_store_fitted", float(grown.fitted), step=m + grow)
    out.emit("grown_store_meta_prep_cpu_s", c, step=m + grow)


def latency(states, n: int, repeats: int, out: Figures) -> None:
    """Section 3: median proposal latency at M = len(states), n target points."""
    m = len(states)
    study = draw_study(FAMILIES["branin"], seed=1, num_meta=0, n_meta=1)
    rng = np.random.default_rng(5)
    Xt = rng.uniform(size=(n, 2))
    target = TaskData("target", torch.tensor(Xt), torch.tensor(study.target(Xt, rng)))
    walls, cpus, prev = [], [], None
    for r in range(repeats):
        prop, wall, c = timed(
            lambda r=r, prev=prev: propose(
                states, target, dim=2, seed=r, init_state=prev
            )
        )
        prev = prop.target_state
        walls.append(wall)
        cpus.append(c)
    out.emit("propose_latency_wall_s_median", float(np.median(walls)), step=m)
    out.emit("propose_latency_cpu_s_median", float(np.median(cpus)), step=m)
    out.emit("propose_fitted_tasks", float(m - len(prop.screened)), step=m)
    out.emit(
        "propose_unpruned_tasks",
        float(m - len(prop.screened) - len(prop.pruned)),
        step=m,
    )
    # the cached meta posteriors at the n target points, were every task fitted:
    # M n^2 + M n floats; with screening only the shortlist's covariances exist
    out.emit("meta_posterior_cache_mb_unscreened", m * (n * n + n) * 8 / 2**20, step=m)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.emit("peak_rss_mb_so_far", peak, step=m)


def branin_study(n_meta: int, out: Figures) -> None:
    """Section 4: a full 40-step Branin study with M = 8."""
    study = draw_study(FAMILIES["branin"], seed=0, num_meta=8, n_meta=n_meta)
    f_star = study.target.optimum()
    states, _, fit_cpu = timed(
        lambda: fit_meta_tasks(study.meta_tasks, seed=0, num_workers=0)
    )
    res = run_bo(study, "scamlgp", states, budget=40, f_star=f_star)
    out.emit("branin_study_cpu_s", fit_cpu + res.cpu_seconds, step=40)
    out.emit("branin_study_meta_fit_cpu_s", fit_cpu)
    out.emit("branin_study_regret@40", float(res.regret[-1]), step=40)


def icm_baseline(pool, icm_ms, ms, out: Figures) -> None:
    """Section 5: ICM MLL evaluation cost, its slope, and its extrapolation."""
    icm = [icm_mll_seconds(pool[:m]) for m in icm_ms]
    for m, sec in zip(icm_ms, icm, strict=True):
        out.emit("icm_mll_eval_cpu_s", sec, step=m)
    if len(icm_ms) < 2:
        return
    slope, intercept = np.polyfit(np.log(icm_ms), np.log(icm), 1)
    out.emit("icm_mll_eval_loglog_slope", float(slope))
    for m in ms:
        out.emit(
            "icm_mll_eval_cpu_s_extrapolated",
            float(np.exp(intercept) * m**slope),
            step=m,
        )


def ray_speedup(pool, ray_m: int, out: Figures) -> None:
    """Section 6: Ray-parallel meta-fit, 1 vs 2 workers (1 CPU each)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    fit_meta_tasks(pool[:2], seed=99, num_workers=2, num_cpus_per_worker=1)
    walls = {}
    for workers in (1, 2):
        _, walls[workers], _ = timed(
            lambda w=workers: fit_meta_tasks(
                pool[:ray_m], seed=0, num_workers=w, num_cpus_per_worker=1
            )
        )
        out.emit(
            "ray_meta_fit_wall_s", walls[workers], step=ray_m, method=f"{workers}-w"
        )
    out.emit("ray_wall_ratio_2_over_1", walls[2] / walls[1], step=ray_m)
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ms", default="8,32,128")
    parser.add_argument("--n-meta", type=int, default=32)
    parser.add_argument("--latency-ms", default="128")
    parser.add_argument("--latency-n", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--grow", type=int, default=100)
    parser.add_argument("--ray-m", type=int, default=128)
    parser.add_argument("--icm-ms", default="8,32,64")
    parser.add_argument("--skip", default="", help="sections to skip, e.g. 4,6")
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = ResultStore(Path(args.out) / "store")
    ms = [int(m) for m in args.ms.split(",")]
    lat_ms = [int(m) for m in args.latency_ms.split(",") if m]
    icm_ms = [int(m) for m in args.icm_ms.split(",") if m]
    skip = set(args.skip.split(","))
    size = max(ms + icm_ms + lat_ms + [args.ray_m]) + args.grow
    pool = draw_study(
        FAMILIES["branin"], seed=0, num_meta=size, n_meta=args.n_meta
    ).meta_tasks
    out = Figures()
    with tempfile.TemporaryDirectory(prefix="scaling-", dir=args.out) as scratch:
        by_m = meta_fit_vs_m(pool, ms, Path(scratch), out)
        if "2" not in skip:
            team_cache(pool, max(ms), by_m[max(ms)], args.grow, out)
        for m in lat_ms:
            states = (
                by_m[m][0]
                if m in by_m
                else fit_meta_tasks(pool[:m], seed=0, num_workers=0)
            )
            latency(states, args.latency_n, args.repeats, out)
    if "4" not in skip:
        branin_study(args.n_meta, out)
    icm_baseline(pool, icm_ms, ms, out)
    if "6" not in skip:
        ray_speedup(pool, args.ray_m, out)
    record_benchmark(store, BENCH, out.rows)
    print(f"stored {len(out.rows)} figures in {args.out}/store (table benchmarks)")


if __name__ == "__main__":
    main()
