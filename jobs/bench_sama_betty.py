"""Benchmark: raymeta's SAMA hypergradient side by side with Betty's SAMA.

Same model (MLP 64-256-256-10, 85,002 parameters), data (sklearn digits, 40%
symmetric label noise, 10 clean meta examples per class), pre-drawn batch schedule
(128 base, 100 meta), initial θ and λ (meta-weight-net, hidden 100, 301
parameters), optimizers (torch Adam lr 1e-3 for θ and for λ) and finite-difference
radius R (1e-2) on both sides. Per step: a base step on the weighted loss with λ
frozen, then (unroll 1) a meta step: SAMA hypergradient from the base optimizer's
state, then Adam on λ. Reported per seed and as mean ± sd over seeds:

* time per meta step (and per base step), wall clock and thread CPU time: median
  over the timed steps (after ``--warmup`` steps, leaving out the memory and probe
  steps) of each process, then the median over ``--repeats`` processes;
* extra peak memory per meta step (and per base step): ``torch.profiler`` with
  ``profile_memory=True`` on the memory steps (every ``--mem-every``, starting at
  half of it); the peak of the CPU allocator's running total of bytes allocated in
  the step (details in ``jobs/betty_side.py``);
* cosine between the two hypergradients on the same step from the same state: the
  raymeta run saves θ, λ and both Adam states before each probe step (1, 2, 10,
  S/2, S); from each snapshot both sides take that whole step (base step, then the
  hypergradient, Betty through its Engine) in float32, and again in float64 as an
  exact-arithmetic reference. Also compared: the adaptation directions p = D ⊙ v
  of the two sides (Betty's read from its ``precondition``), and the share of
  raymeta's ||p||² on coordinates whose Adam second moment is ~0 (√(s/c2) < 10·eps);
* test accuracy (and meta-set accuracy, weight AUC clean-vs-noisy) after S steps.

Variants: ``raymeta`` (defaults: ``adaptation="auto"``, ``cache_stop_grad=True``),
``raymeta_nocache`` (``cache_stop_grad=False``, the estimator Betty computes),
``betty`` (``sama_adam_alpha=R``), ``betty_alpha1`` (Betty's default
``sama_adam_alpha=1.0``; drop it with ``--no-betty-default``) and ``plain`` (no
reweighting: unweighted loss, no meta step; ``--no-plain`` drops it; its weight
AUC is that of the untrained net). Each (variant, seed, repeat) runs in its own
fresh process with ``torch.set_num_threads(1)`` and ``OMP_NUM_THREADS=1``, one after
the other, so both sides are measured alike; the order of the variants alternates.
``uptime`` is recorded before and after each process. The differences between the
two SAMA algorithms are listed in the docstring of ``jobs/betty_side.py``.

Reproduce (Betty lives in a throwaway venv outside the repository)::

    python3 -m venv /tmp/betty-venv
    /tmp/betty-venv/bin/pip install torch==2.13.0 numpy scikit-learn
    /tmp/betty-venv/bin/pip install --ignore-requires-python betty-ml==0.2.1
    .venv/bin/python jobs/bench_sama_betty.py \
        --betty-python /tmp/betty-venv/bin/python --steps 300 --seeds 3 \
        --out /tmp/betty-bench

(plain ``pip install betty-ml`` picks 0.1.1, which has no SAMA: betty-ml 0.2.1
declares ``Requires-Python <3.11``, hence ``--ignore-requires-python``.)

Outputs under ``--out``: ``summary.json``, ``runs.csv`` (one row per variant and
seed), ``cosines.csv`` (one row per seed and probe step), and ``problems/``,
``per_seed/``, ``runs/``, ``snapshots/``, ``probes/``, ``logs/`` with every input
and raw result (``--report-only`` rebuilds the summary from ``per_seed/``).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import betty_side as bs
import numpy as np
import torch

from raymeta.metalearn.reweighting import (
    MetaWeightNet,
    ReweightingProblem,
    UnweightedProblem,
)
from raymeta.metalearn.sama import (
    meta_loss_gradients,
    optimizer_adaptation,
    sama_hypergradient,
)
from raymeta.tasks.datasets import noisy_digits

HERE = Path(__file__).resolve()
SIZES = [64, 256, 256, 10]

# --------------------------------------------------------------------------- problem


def default_settings(
    seed: int,
    steps: int,
    *,
    radius: float = 1e-2,
    warmup: int = 10,
    mem_every: int = 50,
) -> dict[str, Any]:
    """The shared hyperparameters of one seed's problem (both sides read these).

    Memory steps sit half-way between multiples of ``mem_every``; probe steps (where
    the hypergradients are compared) are 1, 2, 10, S/2 and S.
    """
    return {
        "seed": seed,
        "steps": steps,
        "sizes": SIZES,
        "hidden": 100,
        "lr": 1e-3,
        "meta_lr": 1e-3,
        "radius": radius,
        "batch": 128,
        "meta_batch": 100,
        "noise_rate": 0.4,
        "meta_per_class": 10,
        "warmup": warmup,
        "mem_steps": list(range(max(1, mem_every // 2), steps + 1, mem_every)),
        "probe_steps": sorted(
            {k for k in (1, 2, 10, steps // 2, steps) if 1 <= k <= steps}
        ),
    }


def batch_schedule(
    rng: np.random.Generator, n: int, size: int, steps: int
) -> torch.Tensor:
    """``(steps, size)`` int64 indices, each row drawn without replacement."""
    size = min(size, n)
    rows = [rng.choice(n, size=size, replace=False) for _ in range(steps)]
    return torch.as_tensor(np.stack(rows), dtype=torch.int64)


def build_problem(settings: dict[str, Any]) -> dict[str, Any]:
    """Data, initial θ/λ and batch schedule of one seed, as the problem file holds."""
    seed = settings["seed"]
    data = noisy_digits(
        seed=seed,
        noise_rate=settings["noise_rate"],
        meta_per_class=settings["meta_per_class"],
    )
    gen = torch.Generator().manual_seed(seed)
    model = bs.build_mlp(settings["sizes"], gen)
    meta = MetaWeightNet(settings["hidden"], generator=gen)
    rng = np.random.default_rng(seed)
    steps = settings["steps"]
    return {
        "settings": settings,
        "theta": model.state_dict(),
        "lam": meta.state_dict(),
        "x_train": data.x_train,
        "y_train": data.y_train,
        "is_noisy": data.is_noisy,
        "x_meta": data.x_meta,
        "y_meta": data.y_meta,
        "x_test": data.x_test,
        "y_test": data.y_test,
        "base_idx": batch_schedule(rng, len(data.y_train), settings["batch"], steps),
        "meta_idx": batch_schedule(
            rng, len(data.y_meta), settings["meta_batch"], steps
        ),
    }


def write_problem(path: Path, problem: dict[str, Any]) -> None:
    """Save a problem (settings as a JSON string, so ``weights_only`` loads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(problem | {"settings": json.dumps(problem["settings"])}, path)


# --------------------------------------------------------------------------- raymeta


def base_step(
    problem: ReweightingProblem,
    model: torch.nn.Module,
    meta: torch.nn.Module,
    opt: torch.optim.Optimizer,
    batch: bs.Batch,
) -> None:
    """One base step with λ frozen, as raymeta's SAMA loop takes it."""
    meta.requires_grad_(False)
    try:
        loss = problem.base_loss(model, meta, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
    finally:
        meta.requires_grad_(True)
    opt.step()


def meta_step(
    problem: ReweightingProblem,
    model: torch.nn.Module,
    meta: torch.nn.Module,
    opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    batches: tuple[bs.Batch, bs.Batch],
    *,
    radius: float,
    cache: bool,
) -> None:
    """SAMA hypergradient from the base optimizer's state, then Adam on λ."""
    opt, meta_opt = opts
    result = sama_hypergradient(
        problem,
        model,
        meta,
        batches[0],
        batches[1],
        opt,
        radius=radius,
        cache_stop_grad=cache,
    )
    for p, g in zip(meta.parameters(), result.grads):
        p.grad = g
    meta_opt.step()
    meta_opt.zero_grad(set_to_none=True)


def raymeta_probe(
    blob: dict[str, Any], snap: dict[str, Any], dtype: torch.dtype
) -> dict[str, Any]:
    """raymeta's step from a pre-step snapshot, in ``dtype``: both hypergradients.

    Loads θ, λ and the base Adam state (cast to ``dtype``), takes the base step on
    the step's batch, then computes the hypergradient with the stop-gradient inputs
    cached (raymeta's default) and recomputed at θ±εp (Betty's estimator).
    """
    settings = blob["settings"]
    model, meta = load_raymeta_models({"settings": settings} | snap, dtype)
    opt = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    opt.load_state_dict(snap["base_opt"])
    base, metab = bs.probe_batches(blob, int(snap["step"]), dtype)
    problem = ReweightingProblem()
    base_step(problem, model, meta, opt, base[0])
    out: dict[str, Any] = {
        "theta_after_base": [p.detach().clone() for p in model.parameters()]
    }
    out |= adaptation_direction(problem, model, meta, opt, metab[0])
    for name, cache in (("cache", True), ("nocache", False)):
        r = sama_hypergradient(
            problem,
            model,
            meta,
            base[0],
            metab[0],
            opt,
            radius=settings["radius"],
            cache_stop_grad=cache,
        )
        out[f"grads_{name}"] = torch.cat([g.flatten() for g in r.grads])
        out[f"epsilon_{name}"] = r.epsilon
    return out


def adaptation_direction(
    problem: ReweightingProblem,
    model: torch.nn.Module,
    meta: torch.nn.Module,
    opt: torch.optim.Optimizer,
    meta_batch: bs.Batch,
) -> dict[str, torch.Tensor]:
    """raymeta's p = D ⊙ v (flat) and where Adam's q = √(s/c2) is below 10·eps.

    Uses the same public functions as ``sama_hypergradient`` (``meta_loss_gradients``,
    ``optimizer_adaptation``).
    """
    params = list(model.parameters())
    v, _, _ = meta_loss_gradients(problem, model, meta, meta_batch)
    diag = optimizer_adaptation(opt, params)
    group = opt.param_groups[0]
    small = []
    for p in params:
        state = opt.state[p]
        c2 = 1.0 - group["betas"][1] ** float(state["step"])
        q = state["exp_avg_sq"].div(c2).sqrt()
        small.append((q < 10 * group["eps"]).flatten())
    return {
        "direction": torch.cat([(d * x).flatten() for d, x in zip(diag, v)]),
        "q_small": torch.cat(small),
    }


def load_raymeta_models(
    blob: dict[str, Any], dtype: torch.dtype = torch.float32
) -> tuple[torch.nn.Sequential, MetaWeightNet]:
    """θ (the harness MLP) and λ (raymeta's MetaWeightNet) from a problem/snapshot."""
    settings = blob["settings"]
    model = bs.build_mlp(settings["sizes"]).to(dtype)
    model.load_state_dict(blob["theta"])
    meta = MetaWeightNet(settings["hidden"], dtype=dtype)
    meta.load_state_dict(blob["lam"])
    return model, meta


def save_snapshot(
    path: Path,
    step: int,
    model: torch.nn.Module,
    meta: torch.nn.Module,
    opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
) -> None:
    """θ, λ and both Adam states *before* ``step`` (what the probes start from)."""
    state = {"step": step, "theta": model.state_dict(), "lam": meta.state_dict()}
    state |= {"base_opt": opts[0].state_dict(), "meta_opt": opts[1].state_dict()}
    torch.save(state, path / f"step{step:05d}.pt")


def raymeta_train(
    problem_path: Path,
    result_path: Path,
    *,
    cache: bool,
    snap_dir: Path | None,
    plain: bool = False,
) -> None:
    """Train S steps with raymeta's SAMA; write times, peaks, metrics, snapshots.

    ``plain`` trains θ on the unweighted loss with no meta step (the baseline).
    """
    blob = bs.load_problem(problem_path)
    settings, info_start = blob["settings"], bs.run_info()
    model, meta = load_raymeta_models(blob)
    problem = UnweightedProblem() if plain else ReweightingProblem()
    opts = (
        torch.optim.Adam(model.parameters(), lr=settings["lr"]),
        torch.optim.Adam(meta.parameters(), lr=settings["meta_lr"]),
    )
    base = bs.make_batches(blob["x_train"], blob["y_train"], blob["base_idx"])
    metab = bs.make_batches(blob["x_meta"], blob["y_meta"], blob["meta_idx"])
    recorder = bs.StepRecorder(settings["mem_steps"])
    if snap_dir is not None:
        snap_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for step in range(1, len(base) + 1):
        batches = (base[step - 1], metab[step - 1])
        if snap_dir is not None and step in settings["probe_steps"]:
            save_snapshot(snap_dir, step, model, meta, opts)
        base_fn = functools.partial(base_step, problem, model, meta, opts[0])
        recorder.run("base", step, functools.partial(base_fn, batches[0]))
        if not plain:
            meta_fn = functools.partial(meta_step, problem, model, meta, opts)
            meta_fn = functools.partial(
                meta_fn, batches, radius=settings["radius"], cache=cache
            )
            recorder.run("meta", step, meta_fn)
    out = {
        "side": "raymeta",
        "cache_stop_grad": cache,
        "plain": plain,
        "steps": len(base),
        "loop_s": time.perf_counter() - start,
        **recorder.summary(bs.excluded_steps(settings)),
        **bs.final_metrics(model, meta, blob),
        "start": info_start,
        "end": bs.run_info(),
    }
    bs.write_json(result_path, out)


# --------------------------------------------------------------------------- driver


def uptime() -> str:
    """The ``uptime`` line (load averages) right now."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_child(cmd: list[str], log: Path) -> dict[str, Any]:
    """Run one measured process; return wall time and ``uptime`` before/after."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    before, start = uptime(), time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    info = {"uptime_before": before, "uptime_after": uptime()}
    info["process_s"] = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return info


def variant_commands(
    args: argparse.Namespace, problem: Path, seed: int, rep: int
) -> dict[str, list[str]]:
    """The command of every training variant of one seed and repeat.

    Only repeat 0 of ``raymeta`` saves the probe snapshots.
    """
    me = [sys.executable, str(HERE), "--child-raymeta", "--problem", str(problem)]
    betty = [args.betty_python, str(HERE.with_name("betty_side.py")), "train"]
    betty += ["--problem", str(problem)]
    snaps = ["--snapshots", str(args.out / "snapshots" / f"seed{seed}")]
    plan = {
        "raymeta": me + ["--cache", "1"] + (snaps if rep == 0 else []),
        "raymeta_nocache": me + ["--cache", "0"],
        "betty": betty + ["--alpha", str(args.radius)],
    }
    if args.betty_default:
        plan["betty_alpha1"] = betty + ["--alpha", "1.0"]
    if args.with_plain:
        plan["plain"] = me + ["--plain"]
    return {
        name: cmd + ["--result", str(result_path(args, name, seed, rep))]
        for name, cmd in plan.items()
    }


def result_path(args: argparse.Namespace, name: str, seed: int, rep: int) -> Path:
    """Where the child of (variant, seed, repeat) writes its JSON."""
    return args.out / "runs" / f"{name}_seed{seed}_rep{rep}.json"


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Every variant of one seed (``--repeats`` times), then the probes."""
    settings = default_settings(
        seed,
        args.steps,
        radius=args.radius,
        warmup=args.warmup,
        mem_every=args.mem_every,
    )
    problem = args.out / "problems" / f"seed{seed}.pt"
    write_problem(problem, build_problem(settings))
    out: dict[str, Any] = {"settings": settings, "runs": {}}
    for rep in range(args.repeats):
        plan = variant_commands(args, problem, seed, rep)
        order = list(plan) if (seed + rep) % 2 == 0 else list(reversed(plan))
        if rep == 0:  # the snapshots must exist before the probes; keep it first
            order = ["raymeta", *[n for n in order if n != "raymeta"]]
        for name in order:
            log = args.out / "logs" / f"{name}_seed{seed}_rep{rep}.log"
            info = run_child(plan[name], log)
            result = json.loads(result_path(args, name, seed, rep).read_text())
            out["runs"].setdefault(name, []).append(result | info)
            print(f"seed {seed} rep {rep} {name:16s} {short(result)}", flush=True)
            print(f"    {info['uptime_after']}", flush=True)
    out["cosines"], out["probe_uptime"] = probe_seed(args, problem, seed)
    return out


def probe_seed(
    args: argparse.Namespace, problem: Path, seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Betty's probes (its venv), raymeta's (here), and their comparison."""
    snap_dir = args.out / "snapshots" / f"seed{seed}"
    probe_pt = args.out / "probes" / f"betty_seed{seed}.pt"
    cmd = [args.betty_python, str(HERE.with_name("betty_side.py")), "probe"]
    cmd += ["--problem", str(problem), "--snapshots", str(snap_dir)]
    cmd += ["--result", str(probe_pt)]
    info = run_child(cmd, args.out / "logs" / f"probe_seed{seed}.log")
    betty = torch.load(probe_pt, weights_only=True)["probes"]
    blob = bs.load_problem(problem)
    rows = []
    for path in sorted(snap_dir.glob("step*.pt")):
        snap = torch.load(path, weights_only=True)
        step = int(snap["step"])
        b32, b64 = (
            next(r for r in betty if r["step"] == step and r["dtype"] == d)
            for d in ("torch.float32", "torch.float64")
        )
        r32 = raymeta_probe(blob, snap, torch.float32)
        r64 = raymeta_probe(blob, snap, torch.float64)
        rows.append(compare(step, r32, r64, b32, b64))
    return rows, info


def compare(
    step: int,
    r32: dict[str, Any],
    r64: dict[str, Any],
    b32: dict[str, Any],
    b64: dict[str, Any],
) -> dict[str, Any]:
    """Cosines and norm ratios of the hypergradients at one probe step."""
    ray, raync, betty = r32["grads_cache"], r32["grads_nocache"], b32["grads"]
    theta_diff = max(
        float((a - b).abs().max())
        for a, b in zip(r32["theta_after_base"], b32["theta_after_base"])
    )
    return {
        "step": step,
        "cos_raymeta_betty": cosine(ray, betty),
        "cos_raymeta_nocache_betty": cosine(raync, betty),
        "cos_raymeta_raymeta_nocache": cosine(ray, raync),
        "cos64_raymeta_betty": cosine(r64["grads_cache"], b64["grads"]),
        "cos64_raymeta_nocache_betty": cosine(r64["grads_nocache"], b64["grads"]),
        "cos_raymeta_32_64": cosine(ray, r64["grads_cache"]),
        "cos_raymeta_nocache_32_64": cosine(raync, r64["grads_nocache"]),
        "cos_betty_32_64": cosine(betty, b64["grads"]),
        "cos_direction_raymeta_betty": cosine(r32["direction"], b32["direction"]),
        "cos64_direction_raymeta_betty": cosine(r64["direction"], b64["direction"]),
        "raymeta_p_share_on_q_below_10eps": share(r64["direction"], r64["q_small"]),
        "betty_p_share_on_q_below_10eps": share(b64["direction"], r64["q_small"]),
        "cos64_direction_raymeta_betty_elsewhere": cosine(
            r64["direction"][~r64["q_small"]], b64["direction"][~r64["q_small"]]
        ),
        "norm_ratio_raymeta_betty": float(ray.norm() / betty.norm()),
        "norm_ratio_raymeta_nocache_betty": float(raync.norm() / betty.norm()),
        "raymeta_epsilon": r32["epsilon_cache"],
        "theta_after_base_max_abs_diff": theta_diff,
        "betty_theta_restore_max_abs_err": b32["theta_restore_max_abs_err"],
    }


def short(result: dict[str, Any]) -> str:
    """One-line digest of a run result."""
    text = f"base {result['base_ms_median']:.3f} ms, test acc {result['test_acc']:.4f}"
    peaks = list(result["meta_peak_bytes"].values())
    if result["meta_ms_median"] is None or not peaks:
        return text
    return (
        f"meta {result['meta_ms_median']:.3f} ms "
        f"(cpu {result['meta_cpu_ms_median']:.3f}), meta peak "
        f"{statistics.median(peaks) / 1024:.0f} KiB, " + text
    )


def share(p: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of ||p||² carried by the coordinates in ``mask``."""
    p = p.double()
    return float(p[mask].square().sum() / p.square().sum())


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two flat vectors, in float64 (NaN if one is zero)."""
    a, b = a.double(), b.double()
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom else math.nan


# --------------------------------------------------------------------------- report


TIME_FIELDS = ["meta_ms_median", "meta_cpu_ms_median", "base_ms_median"]
TIME_FIELDS += ["base_cpu_ms_median"]
RUN_FIELDS = TIME_FIELDS + ["meta_peak_kib", "base_peak_kib"]
RUN_FIELDS += ["test_acc", "meta_acc", "weight_auc"]


def run_row(variant: str, seed: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Flat CSV row of one (variant, seed).

    Times: median over the repeats of each process's median; peaks: median (and
    max) over the memory steps of repeat 0; NaN where a variant has no meta step.
    """
    first = results[0]
    row: dict[str, Any] = {"variant": variant, "seed": seed, "repeats": len(results)}
    for field in TIME_FIELDS:
        values = [r[field] for r in results if r[field] is not None]
        row[field] = statistics.median(values) if values else math.nan
    for kind in ("meta", "base"):
        peaks = list(first[f"{kind}_peak_bytes"].values()) or [math.nan]
        row[f"{kind}_peak_kib"] = statistics.median(peaks) / 1024
        row[f"{kind}_peak_kib_max"] = max(peaks) / 1024
    for field in ("test_acc", "meta_acc", "weight_auc"):
        row[field] = first[field]
    row["test_acc_spread_over_repeats"] = max(
        abs(r["test_acc"] - first["test_acc"]) for r in results
    )
    row["uptime_before"] = first["uptime_before"]
    row["uptime_after"] = results[-1]["uptime_after"]
    return row


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; NaN if any is NaN)."""
    vals = [float(v) for v in values]
    if any(math.isnan(v) for v in vals):
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def summarise(rows: list[dict[str, Any]], cos_rows: list[dict[str, Any]]) -> dict:
    """Mean ± sd over seeds per variant, ratios to Betty, cosines per probe step."""
    summary: dict[str, Any] = {"variants": {}, "ratios_to_betty": {}, "cosines": {}}
    by = {(r["variant"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [by[variant, s] for s in seeds]
        summary["variants"][variant] = {
            f: mean_sd([r[f] for r in mine]) for f in RUN_FIELDS + ["meta_peak_kib_max"]
        }
        summary["ratios_to_betty"][variant] = {
            f: mean_sd([by[variant, s][f] / by["betty", s][f] for s in seeds])
            for f in RUN_FIELDS[:6]
        }
    for step in sorted({r["step"] for r in cos_rows}):
        mine = [r for r in cos_rows if r["step"] == step]
        keys = [k for k in mine[0] if k not in ("step", "seed")]
        summary["cosines"][str(step)] = {
            k: mean_sd([r[k] for r in mine]) + (min(r[k] for r in mine),) for k in keys
        }
    return summary


def _pm(value: tuple[float, ...], fmt: str) -> str:
    return f"{value[0]:{fmt}}±{value[1]:{fmt}}"


def print_table(summary: dict[str, Any], seeds: int) -> None:
    """Human-readable tables of the summary."""
    print(f"\nmean ± sd over {seeds} seeds (torch threads = 1; ms = median per step)")
    cols = ["meta ms", "meta cpu ms", "base ms", "base cpu ms", "meta peak KiB"]
    cols += ["base peak KiB", "test acc", "weight AUC"]
    print(f"{'variant':16s} " + " ".join(f"{c:>16s}" for c in cols))
    for name, v in summary["variants"].items():
        cells = [_pm(v[f], ".3f") for f in TIME_FIELDS]
        cells += [_pm(v["meta_peak_kib"], ".1f"), _pm(v["base_peak_kib"], ".1f")]
        cells += [_pm(v["test_acc"], ".4f"), _pm(v["weight_auc"], ".3f")]
        print(f"{name:16s} " + " ".join(f"{c:>16s}" for c in cells))
    print("\nratio to betty (per seed, then mean ± sd)")
    for name, v in summary["ratios_to_betty"].items():
        cells = [f"{f}={_pm(v[f], '.3f')}" for f in RUN_FIELDS[:6]]
        print(f"{name:16s} " + "  ".join(cells))
    print("\nhypergradient cosines, same state and batches (mean ± sd, min over seeds)")
    for step, c in summary["cosines"].items():
        print(f"step {step}:")
        for key, val in c.items():
            print(f"    {key:34s} {val[0]: .6g} ± {val[1]:.3g}  (min {val[2]: .6g})")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows (dicts with the same keys) as CSV."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def drive(args: argparse.Namespace) -> None:
    """Run every seed (each saved to ``per_seed/`` as it ends), then report."""
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"start: {uptime()}", flush=True)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if not args.report_only:
            bs.write_json(
                args.out / "per_seed" / f"seed{seed}.json", run_seed(args, seed)
            )
    report(args)


def report(args: argparse.Namespace) -> None:
    """Write summary.json, runs.csv, cosines.csv from ``per_seed/`` and print."""
    per_seed, rows, cos_rows = {}, [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        path = args.out / "per_seed" / f"seed{seed}.json"
        per_seed[seed] = json.loads(path.read_text())
        for variant, results in per_seed[seed]["runs"].items():
            rows.append(run_row(variant, seed, results))
        cos_rows += [{"seed": seed} | c for c in per_seed[seed]["cosines"]]
    order = ["raymeta", "raymeta_nocache", "betty", "betty_alpha1", "plain"]
    rows.sort(key=lambda r: (order.index(r["variant"]), r["seed"]))
    summary = summarise(rows, cos_rows)
    summary |= {"end_uptime": uptime(), "args": vars(args) | {"out": str(args.out)}}
    write_csv(args.out / "runs.csv", rows)
    write_csv(args.out / "cosines.csv", cos_rows)
    bs.write_json(args.out / "summary.json", summary)
    print_table(summary, args.seeds)
    print(f"end: {summary['end_uptime']}\nwrote {args.out}")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: the driver, or (internal) one raymeta child process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--betty-python", default="/tmp/betty-venv/bin/python")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="processes per run")
    parser.add_argument("--radius", type=float, default=1e-2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--mem-every", type=int, default=50)
    parser.add_argument(
        "--no-betty-default", dest="betty_default", action="store_false"
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/betty-bench"))
    parser.add_argument(
        "--report-only", action="store_true", help="re-report --out's per_seed/"
    )
    parser.add_argument("--child-raymeta", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--problem", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--snapshots", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-plain", dest="with_plain", action="store_false", help="no baseline"
    )
    args = parser.parse_args(argv)
    bs.setup_threads()
    if args.child_raymeta:
        raymeta_train(
            args.problem,
            args.result,
            cache=bool(args.cache),
            snap_dir=args.snapshots,
            plain=args.plain,
        )
    else:
        drive(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
