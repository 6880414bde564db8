"""ScaML-GP scaling: meta-fit time vs M, Ray speed-up, proposal latency, study cost.

    python jobs/bench_scamlgp_scaling.py [--ms 8,32,128] [--n-meta 32] [--ray-m 128]
        [--latency-m 128] [--latency-n 40] [--icm-ms 8,32,64] [--out bench-results]

Figures (printed and appended to the ``benchmarks`` table of ``<out>/store``):
meta-fit CPU and wall seconds per M (serial, in-process, torch 1 thread) with the R^2
of a line through them; wall time of the Ray-parallel fit of ``--ray-m`` tasks with 1
and 2 workers (1 CPU each, after a warm-up call); median proposal latency (wall and
CPU) at M=``--latency-m``, n=``--latency-n``; CPU seconds of a full 40-step Branin
study with M=8 (meta-fit + 40 proposals); CPU seconds of one marginal-likelihood
evaluation of the ICM multi-task GP baseline on all points for each of ``--icm-ms``,
with the slope of log time against log M (1 = linear, 3 = cubic).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import ray
import torch

from raymeta.gp.benchmark import icm_mll_seconds, run_bo
from raymeta.gp.propose import propose
from raymeta.results import ResultStore
from raymeta.results.benchmark import record_benchmark
from raymeta.search.fitting import fit_meta_tasks
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ms", default="8,32,128")
    parser.add_argument("--n-meta", type=int, default=32)
    parser.add_argument("--ray-m", type=int, default=128)
    parser.add_argument("--latency-m", type=int, default=128)
    parser.add_argument("--latency-n", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--icm-ms", default="8,32,64")
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = ResultStore(Path(args.out) / "store")
    ms = [int(m) for m in args.ms.split(",")]
    branin = FAMILIES["branin"]
    icm_ms = [int(m) for m in args.icm_ms.split(",") if m]
    pool = draw_study(
        branin, seed=0, num_meta=max(ms + icm_ms + [args.ray_m]), n_meta=args.n_meta
    ).meta_tasks
    rows = []

    def emit(metric: str, value: float, **extra) -> None:
        print(f"{metric} {extra or ''} = {value:.4g}", flush=True)
        rows.append(
            {"family": "branin", "metric": metric, "value": float(value), **extra}
        )

    # 1. meta-fit time against M (serial, separate calls)
    states_by_m, cpu = {}, []
    for m in ms:
        states, wall, c = timed(
            lambda m=m: fit_meta_tasks(pool[:m], seed=0, num_workers=0)
        )
        states_by_m[m] = states
        cpu.append(c)
        emit("meta_fit_cpu_s", c, step=m)
        emit("meta_fit_wall_s", wall, step=m)
    if len(ms) > 2:
        emit("meta_fit_cpu_r2_linear", r_squared(ms, cpu))
        emit("meta_fit_cpu_s_per_task", float(np.polyfit(ms, cpu, 1)[0]))

    # 2. proposal latency at M = latency_m, n target points
    lat_states = states_by_m.get(args.latency_m) or fit_meta_tasks(
        pool[: args.latency_m], seed=0, num_workers=0
    )
    study = draw_study(branin, seed=1, num_meta=0, n_meta=1)
    rng = np.random.default_rng(5)
    Xt = rng.uniform(size=(args.latency_n, 2))
    target = TaskData("target", torch.tensor(Xt), torch.tensor(study.target(Xt, rng)))
    walls, cpus, prev = [], [], None
    for r in range(args.repeats):
        prop, wall, c = timed(
            lambda r=r, prev=prev: propose(
                lat_states, target, dim=2, seed=r, init_state=prev
            )
        )
        prev = prop.target_state
        walls.append(wall)
        cpus.append(c)
    emit("propose_latency_wall_s_median", float(np.median(walls)), step=args.latency_m)
    emit("propose_latency_cpu_s_median", float(np.median(cpus)), step=args.latency_m)
    emit(
        "propose_unpruned_tasks",
        float(args.latency_m - len(prop.pruned)),
        step=args.latency_m,
    )

    # 3. a full 40-step Branin study with M = 8 (meta-fit + BO loop), CPU seconds
    study = draw_study(branin, seed=0, num_meta=8, n_meta=args.n_meta)
    f_star = study.target.optimum()
    states, _, fit_cpu = timed(
        lambda: fit_meta_tasks(study.meta_tasks, seed=0, num_workers=0)
    )
    res = run_bo(study, "scamlgp", states, budget=40, f_star=f_star)
    emit("branin_study_cpu_s", fit_cpu + res.cpu_seconds, step=40)
    emit("branin_study_meta_fit_cpu_s", fit_cpu)
    emit("branin_study_regret@40", float(res.regret[-1]), step=40)

    # 4. the ICM multi-task GP baseline: one MLL evaluation on all points
    icm = [icm_mll_seconds(pool[:m]) for m in icm_ms]
    for m, sec in zip(icm_ms, icm):
        emit("icm_mll_eval_cpu_s", sec, step=m)
    if len(icm_ms) > 1:
        slope = np.polyfit(np.log(icm_ms), np.log(icm), 1)[0]
        emit("icm_mll_eval_loglog_slope", float(slope))

    # 5. Ray-parallel meta-fit: 1 vs 2 workers (1 CPU each), after a warm-up
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    fit_meta_tasks(pool[:2], seed=99, num_workers=2, num_cpus_per_worker=1)
    walls = {}
    for workers in (1, 2):
        _, walls[workers], _ = timed(
            lambda w=workers: fit_meta_tasks(
                pool[: args.ray_m], seed=0, num_workers=w, num_cpus_per_worker=1
            )
        )
        emit(
            "ray_meta_fit_wall_s",
            walls[workers],
            step=args.ray_m,
            method=f"{workers}-workers",
        )
    emit("ray_wall_ratio_2_over_1", walls[2] / walls[1], step=args.ray_m)
    ray.shutdown()
    record_benchmark(store, BENCH, rows)
    print(f"stored {len(rows)} figures in {args.out}/store (table benchmarks)")


if __name__ == "__main__":
    main()
