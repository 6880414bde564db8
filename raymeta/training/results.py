"""Result rows of the training methods and reading them back from the store.

Rank 0 writes these through :class:`raymeta.training.skeleton.RowWriter`: step
metrics at every checkpoint, and at the end ``summary/<name>`` metric rows plus the
method's per-example table (SAMA's ``data_weights``). A finished run is recognised
by its summary rows (:func:`read_summary`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = [
    "hetrom_summary",
    "read_summary",
    "sama_final_rows",
    "summary_metrics",
    "summary_rows",
]


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Headline numbers of a SAMA run summary (accuracies, weight AUC, throughput)."""
    from raymeta.metalearn.reweighting import weight_auc

    weights = torch.tensor(np.array(summary["weights"]))
    noisy = torch.tensor(np.array(summary["is_noisy"]))
    out = {
        "test_acc": summary["test_acc"],
        "meta_acc": summary["meta_acc"],
        "test_acc_at_best_meta": summary["test_acc_at_best_meta"] or float("nan"),
        "weight_auc": weight_auc(weights, noisy) if noisy.any() else None,
        "mean_weight_clean": float(weights[~noisy].mean()) if (~noisy).any() else 0.0,
        "mean_weight_noisy": float(weights[noisy].mean()) if noisy.any() else 0.0,
        "samples_per_s": summary["samples_per_s"],
        "attempt": float(summary["attempt"]),
    }
    return {k: float(v) for k, v in out.items() if v is not None}


def summary_rows(
    figures: dict[str, float], *, method: str, step: int, attempt: int
) -> list[dict[str, Any]]:
    """``summary/<name>`` rows of the ``metrics`` table."""
    return [
        {
            "method": method,
            "step": step,
            "name": f"summary/{name}",
            "value": float(value),
            "rank": 0,
            "attempt": attempt,
        }
        for name, value in figures.items()
    ]


def sama_final_rows(
    summary: dict[str, Any], *, method: str
) -> dict[str, list[dict[str, Any]]]:
    """SAMA's end-of-run rows: summary figures and one weight row per example."""
    step = int(summary["steps"])
    weights = [
        {
            "example_id": int(i),
            "weight": float(w),
            "label": int(lab),
            "observed_label": int(obs),
            "is_noisy": bool(n),
            "split": "train",
            "step": step,
        }
        for i, w, lab, obs, n in zip(
            summary["example_ids"],
            summary["weights"],
            summary["labels"],
            summary["observed_labels"],
            summary["is_noisy"],
        )
    ]
    figures = summary_metrics(summary)
    return {
        "metrics": summary_rows(
            figures, method=method, step=step, attempt=int(summary["attempt"])
        ),
        "data_weights": weights,
    }


def read_summary(
    store: Any, experiment: str, run_id: str, *, step: int | None = None
) -> dict[str, float]:
    """The ``summary/<name>`` figures a finished run wrote (empty if none yet).

    Args:
        store: A :class:`raymeta.results.ResultStore`.
        experiment: The run's experiment.
        run_id: The run's id (its run name).
        step: Only a run finished at this step (a run extended to more steps
            under the same name has a summary per finish); None: any.
    """
    if "metrics" not in store.tables():
        return {}
    filters = [("experiment", "=", experiment), ("run_id", "=", run_id)]
    if step is not None:
        filters.append(("step", "=", step))
    rows = store.to_pandas("metrics", filters=filters, columns=["name", "value"])
    rows = rows[rows["name"].str.startswith("summary/")]
    return {
        n.removeprefix("summary/"): float(v)
        for n, v in zip(rows["name"], rows["value"], strict=True)
    }


def hetrom_summary(
    out: dict[str, Any], store: Any = None, *, run_id: str = "", after_step: int = 0
) -> dict[str, float]:
    """HeTRoM's headline figures: clean-test metric, and how well the dropped-top set
    matched the contaminated tasks (from the store's ``task_stats``, after warm-up).

    Args:
        out: ``Result.return_value`` of a HeTRoM :func:`~raymeta.training.fit.fit`.
        store: The run's results store (optional).
        run_id: The run's id in the store.
        after_step: Only steps after this one count (skip the warm-up).
    """
    from raymeta.metalearn.hetrom import selection_quality
    from raymeta.tasks.episodes import TASK_KINDS

    figures = {
        "test_metric": float(out["test_metric"]),
        "test_ci95": float(out["test_ci95"]),
        "attempt": float(out["attempt"]),
    }
    if store is None or "task_stats" not in store.tables():
        return figures
    stats = store.to_pandas(
        "task_stats", filters=[("run_id", "=", run_id), ("step", ">", after_step)]
    )
    if stats.empty:
        return figures
    dropped_top = torch.tensor((stats["dropped"] == "top").to_numpy())
    kinds = torch.tensor([TASK_KINDS.index(k) for k in stats["task_kind"]])
    precision, recall = selection_quality(dropped_top, kinds)
    figures |= {"dropped_top_precision": precision, "dropped_top_recall": recall}
    return figures
