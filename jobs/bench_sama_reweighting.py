"""Benchmark: SAMA meta-weight-net reweighting and SAMA data pruning on digits.

Usage::

    python jobs/bench_sama_reweighting.py --part reweight --seeds 0,1,2
    python jobs/bench_sama_reweighting.py --part sensitivity --seeds 0,1,2 \
        --meta-lrs 1e-3,3e-3,1e-2
    python jobs/bench_sama_reweighting.py --part prune --seeds 0,1,2
    python jobs/bench_sama_reweighting.py --part glyphs --seeds 0,1,2 --steps 600

``reweight``: 40% symmetric label noise, 100-example clean meta set; plain training,
plain on noisy + meta set, plain early-stopped on the meta set, clean meta set only,
the oracle (only clean-labelled training points) and SAMA-MWN with an Adam base.
``sensitivity``: SAMA-MWN over meta learning rates. ``prune``: the paper's SAMA
pruning (λ = MLP over per-example CE and EMA-teacher CE, hard Gumbel-softmax keep
weights with τ = 0.5, meta set = training set; deterministic keep scores averaged over
the evaluations in the last quarter of ``--score-steps``) vs random and EL2N at
``--keep`` (default 0.7, i.e. 30% pruned), each retrained from scratch for
``--steps``. ``--prune-noise`` adds symmetric label noise to the training set (the
rows then also report the fraction of noisy examples each method keeps).
``glyphs``: 20-way classification of rendered glyphs (:func:`raymeta.tasks.glyphs.
glyph_classification`, 100 examples per class: 10 clean meta, 30 test, 60 training
with 40% symmetric label noise) on a Conv4, passed to :func:`raymeta.training.fit` as
the user's own arrays (the bring-your-own path): plain, early-stopped on the meta
set, clean meta set only, SAMA-MWN (weight AUC from the known noise mask).
Every run is a ``TorchTrainer`` in local mode (``num_workers=0``, one process); the
figures are printed and appended to the results store table ``benchmarks``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from raymeta.config import override, parse_config
from raymeta.metalearn.models import build_mlp
from raymeta.metalearn.pruning import el2n_scores, keep_mask, random_scores
from raymeta.tasks.sources import builtin_sama_data
from raymeta.training import fit, summary_metrics

BASE = dict(
    job="sama",
    batch_size=128,
    meta_batch_size=100,
    eval_every=100,
    report_every=1000,
    checkpoint_every=0,
    data={"dataset": "digits", "noise_rate": 0.4, "meta_per_class": 10},
    model={"hidden": [256, 256]},
    optim={"name": "adam", "lr": 1e-3},
    scaling={"num_workers": 0},
)
#: Flat benchmark options that live in the config's [data] section.
DATA_KEYS = ("noise_rate", "train_set", "keep_ids_path")


GLYPH_BASE = BASE | dict(
    batch_size=64,
    eval_every=50,
    model={"factory": "conv4", "hidden": []},
)


def run(tmp: str, name: str, *, data=None, base=BASE, **overrides):
    changes = {f"data.{k}" if k in DATA_KEYS else k: v for k, v in overrides.items()}
    cfg = override(parse_config({**base, "storage": {"storage_path": tmp}}), changes)
    t0 = time.perf_counter()
    summary = fit(cfg, data=data, run_name=f"{name}-{time.time_ns()}").return_value
    figures = summary_metrics(summary)
    figures["seconds"] = time.perf_counter() - t0
    return cfg, summary, figures


def row_adder(rows: list, family: str, seed: int):
    """``add(method, value, metric="test_acc")`` appending one benchmark row."""

    def add(method, value, metric="test_acc"):
        rows.append(
            dict(family=family, method=method, seed=seed, metric=metric, value=value)
        )

    return add


def sama_label(normalize: bool) -> str:
    return "sama_mwn_adam_normalized" if normalize else "sama_mwn_adam"


def reweight_rows(tmp, seed, steps, meta_lr, normalize=False):
    rows = []
    add = row_adder(rows, "digits-noise0.4", seed)

    _, _, plain = run(tmp, "plain", seed=seed, steps=steps, application="plain")
    add("plain", plain["test_acc"])
    add("early_stop_on_meta", plain["test_acc_at_best_meta"])
    for train_set, method in (
        ("noisy+meta", "plain+meta"),
        ("meta", "clean_meta_only"),
        ("clean", "oracle_clean_train"),
    ):
        _, _, fig = run(
            tmp,
            method,
            seed=seed,
            steps=steps,
            application="plain",
            train_set=train_set,
        )
        add(method, fig["test_acc"])
    _, _, sama = run(
        tmp,
        "sama",
        seed=seed,
        steps=steps,
        application="reweight",
        meta_lr=meta_lr,
        normalize_weights=normalize,
    )
    method = sama_label(normalize)
    for metric in ("weight_auc", "mean_weight_clean", "mean_weight_noisy", "seconds"):
        add(method, sama[metric], metric)
    add(method, sama["test_acc"])
    return rows


def glyph_splits(seed: int, noise: float = 0.4, classes: int = 20):
    """Noisy train / clean meta / test arrays of glyph classes, and the noise mask."""
    from raymeta.tasks.datasets import symmetric_label_noise
    from raymeta.tasks.glyphs import glyph_classification

    data = glyph_classification(num_classes=classes, examples_per_class=100, seed=0)
    x, y = data.features.reshape(len(data), -1), data.labels
    rng = np.random.default_rng(seed)
    parts = {"meta": [], "test": [], "train": []}
    for c in range(classes):
        rows = rng.permutation(np.flatnonzero(y.numpy() == c))
        parts["meta"].append(rows[:10])
        parts["test"].append(rows[10:40])
        parts["train"].append(rows[40:])
    idx = {k: torch.as_tensor(np.sort(np.concatenate(v))) for k, v in parts.items()}
    observed, flipped = symmetric_label_noise(
        y[idx["train"]].numpy(), noise, classes, rng
    )
    splits = {k: (x[i], y[i]) for k, i in idx.items()}
    splits["train"] = (x[idx["train"]], torch.as_tensor(observed))
    return splits, torch.as_tensor(flipped)


def glyph_rows(tmp, seed, steps, meta_lr, normalize=False):
    from raymeta.metalearn.reweighting import weight_auc

    data, noisy = glyph_splits(seed)
    rows = []
    add = row_adder(rows, "glyphs20-conv4-noise0.4", seed)

    common = dict(data=data, base=GLYPH_BASE, seed=seed, steps=steps)
    _, _, plain = run(tmp, "glyph-plain", application="plain", **common)
    add("plain", plain["test_acc"])
    add("early_stop_on_meta", plain["test_acc_at_best_meta"])
    add("plain", plain["seconds"], "seconds")
    _, _, meta = run(tmp, "glyph-meta", application="plain", train_set="meta", **common)
    add("clean_meta_only", meta["test_acc"])
    _, summary, sama = run(
        tmp,
        "glyph-sama",
        application="reweight",
        meta_lr=meta_lr,
        normalize_weights=normalize,
        **common,
    )
    weights = torch.as_tensor(np.array(summary["weights"]))
    method = sama_label(normalize)
    add(method, sama["test_acc"])
    add(method, weight_auc(weights, noisy), "weight_auc")
    add(method, float(weights[~noisy].mean()), "mean_weight_clean")
    add(method, float(weights[noisy].mean()), "mean_weight_noisy")
    add(method, sama["seconds"], "seconds")
    return rows


def sensitivity_rows(tmp, seed, steps, meta_lrs):
    rows = []
    for lr in meta_lrs:
        _, _, fig = run(
            tmp,
            f"sama-lr{lr}",
            seed=seed,
            steps=steps,
            application="reweight",
            meta_lr=lr,
        )
        for metric in ("test_acc", "weight_auc"):
            rows.append(
                dict(
                    family="digits-noise0.4",
                    method=f"sama_mwn_meta_lr={lr:g}",
                    seed=seed,
                    metric=metric,
                    value=fig[metric],
                )
            )
    return rows


def prune_rows(tmp, seed, steps, keep, noise, score_steps, meta_lr):
    family = f"digits-noise{noise:g}-keep{keep:g}"
    common = dict(seed=seed, noise_rate=noise, application="plain")
    cfg, sama_summary, _ = run(
        tmp,
        "prune-score",
        seed=seed,
        noise_rate=noise,
        application="prune",
        steps=score_steps,
        meta_lr=meta_lr,
        meta_batch_size=128,
        eval_every=max(score_steps // 20, 1),  # 5 score checkpoints in the last 25%
    )
    data = builtin_sama_data(cfg.data, seed=cfg.seed, dtype=torch.float32)
    ids = data.train_ids.numpy()
    # EL2N from a plain model trained for score_steps // 5 steps (early in training).
    el2n_cfg, el2n_summary, _ = run(
        tmp, "el2n-probe", steps=max(score_steps // 5, 1), **common
    )
    model = build_mlp(
        [64, *el2n_cfg.model.hidden, 10],
        generator=torch.Generator(),
        dtype=torch.float32,
    )
    torch.nn.utils.vector_to_parameters(
        torch.as_tensor(el2n_summary["base_params"]), model.parameters()
    )
    gen = torch.Generator().manual_seed(seed)
    scores = {
        "sama": torch.as_tensor(sama_summary["weights"]),
        "el2n": el2n_scores(model, data.x_train, data.y_train),
        "random": random_scores(len(ids), gen),
    }
    rows = []
    _, _, full = run(tmp, "full", steps=steps, **common)
    rows.append(
        dict(
            family=family,
            method="full_data",
            seed=seed,
            metric="test_acc",
            value=full["test_acc"],
        )
    )
    for method, score in scores.items():
        path = Path(tmp) / f"keep-{method}-{seed}.npy"
        mask = keep_mask(score, keep_fraction=keep)
        np.save(path, ids[mask.numpy()])
        if noise > 0:
            rows.append(
                dict(
                    family=family,
                    method=f"{method}_pruned",
                    seed=seed,
                    metric="noisy_fraction_kept",
                    value=float(data.is_noisy[mask].double().mean()),
                )
            )
        _, _, fig = run(
            tmp, f"retrain-{method}", steps=steps, keep_ids_path=str(path), **common
        )
        rows.append(
            dict(
                family=family,
                method=f"{method}_pruned",
                seed=seed,
                metric="test_acc",
                value=fig["test_acc"],
            )
        )
    return rows


def print_table(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["family"], r["method"], r["metric"]), []).append(
            r["value"]
        )
    for (family, method, metric), values in sorted(groups.items()):
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else float("nan")
        shown = ", ".join(f"{v:.4f}" for v in values)
        print(
            f"{family:28s} {method:26s} {metric:18s} {mean:.4f} +- {std:.4f} "
            f"(n={len(values)}: {shown})",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--part",
        choices=["reweight", "sensitivity", "prune", "glyphs"],
        required=True,
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--meta-lr", type=float, default=3e-3)
    parser.add_argument("--meta-lrs", default="1e-3,3e-3,1e-2")
    parser.add_argument("--keep", type=float, default=0.7)
    parser.add_argument("--prune-noise", type=float, default=0.0)
    parser.add_argument("--score-steps", type=int, default=1000)
    parser.add_argument("--prune-meta-lr", type=float, default=1e-3)
    parser.add_argument("--results", default=None, help="results-store root")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--normalize-weights",
        action="store_true",
        help="SAMA with the meta-weight-net's weights normalised per batch",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sama-bench-") as tmp:
        for seed in seeds:
            if args.part == "reweight":
                new = reweight_rows(
                    tmp, seed, args.steps, args.meta_lr, args.normalize_weights
                )
            elif args.part == "glyphs":
                new = glyph_rows(
                    tmp, seed, args.steps, args.meta_lr, args.normalize_weights
                )
            elif args.part == "sensitivity":
                lrs = [float(x) for x in args.meta_lrs.split(",")]
                new = sensitivity_rows(tmp, seed, args.steps, lrs)
            else:
                new = prune_rows(
                    tmp,
                    seed,
                    args.steps,
                    args.keep,
                    args.prune_noise,
                    args.score_steps,
                    args.prune_meta_lr,
                )
            for r in new:
                r["step"] = args.steps
            rows += new
            print(f"--- after seed {seed}", flush=True)
            print_table(rows)
    if args.results:
        from raymeta.results import ResultStore
        from raymeta.results.benchmark import record_benchmark

        record_benchmark(ResultStore(args.results), f"sama_{args.part}", rows)


if __name__ == "__main__":
    main()
