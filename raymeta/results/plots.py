"""Plots of stored results (PNG files, no display needed).

:func:`plot_lines` draws one line per group: the median over repeats (e.g. seeds) with
a band around it, by default the 25-75% quantiles (:data:`QUARTILES`); pass another
:class:`Band`, e.g. a bootstrap interval of the median, to draw that instead.
:func:`plot_histogram` compares value distributions between groups (e.g. the
learned weights of clean vs noisy examples).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from raymeta.errors import SchemaMismatchError

__all__ = ["QUARTILES", "Band", "plot_histogram", "plot_lines"]


@dataclass(frozen=True)
class Band:
    """The shaded band around each median line.

    Attributes:
        label: How the axis label names it, e.g. ``"25-75% band"``.
        bounds: Maps the repeats at one x, shape ``(r,)``, to ``(lower, upper)``.
    """

    label: str
    bounds: Callable[[np.ndarray], tuple[float, float]]


def _quartiles(values: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(values, [0.25, 0.75])
    return float(low), float(high)


QUARTILES = Band("25-75% band", _quartiles)


def _require(df: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaMismatchError(
            f"cannot plot: column(s) {missing} not found; available: {list(df.columns)}"
        )


def plot_lines(
    df: pd.DataFrame,
    *,
    x: str,
    y: str,
    out: str | Path,
    by: str | None = None,
    logy: bool = False,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    band: Band = QUARTILES,
) -> Path:
    """Plot median ``y`` against ``x`` per group, with a band over repeats.

    Args:
        df: Long-format rows; several rows per (group, x) are treated as repeats.
        x: Column for the horizontal axis.
        y: Column for the vertical axis (numeric).
        out: PNG path to write (parent directories are created).
        by: Optional grouping column (one line per value).
        logy: Use a logarithmic vertical axis.
        title: Figure title.
        xlabel: Horizontal axis label, with units (default: the column name).
        ylabel: Vertical axis label, with units (default: ``y``); "(median,
            <band label>)" is added when there are repeats.
        band: What the shaded band shows (default: the 25-75% quantiles).

    Returns:
        The written path.

    Raises:
        SchemaMismatchError: A named column is missing.
    """
    _require(df, [x, y] + ([by] if by else []))
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = df.groupby(by, observed=True) if by else [(y, df)]
    repeats = False
    for name, group in groups:
        per_x = group.groupby(x)[y]
        bounds = np.array([band.bounds(v.to_numpy(float)) for _, v in per_x])
        repeats |= bool(per_x.size().gt(1).any())
        label = name[0] if isinstance(name, tuple) else name
        medians = per_x.median()
        ax.plot(medians.index, medians, label=str(label))
        ax.fill_between(medians.index, bounds[:, 0], bounds[:, 1], alpha=0.2)
    if logy:
        ax.set_yscale("log")
    suffix = f" (median, {band.label})" if repeats else ""
    ax.set(
        xlabel=xlabel or x,
        ylabel=(ylabel or y) + suffix,
        title=title or f"{y} vs {x}",
    )
    if by:
        ax.legend(title=by)
    return _save(fig, out)


def plot_histogram(
    df: pd.DataFrame,
    *,
    value: str,
    by: str,
    out: str | Path,
    title: str | None = None,
    xlabel: str | None = None,
    labels: dict[Any, str] | None = None,
) -> Path:
    """Overlay histograms of ``value`` for each value of ``by``; returns the path.

    Args:
        df: One row per item (e.g. per training example).
        value: Numeric column whose distribution is drawn.
        by: One histogram per value of this column.
        out: PNG path to write.
        title: Figure title.
        xlabel: Horizontal axis label, with units (default: ``value``).
        labels: Legend text per value of ``by`` (default: ``"<by>=<value>"``).
    """
    _require(df, [value, by])
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, group in df.groupby(by, observed=True):
        key = name[0] if isinstance(name, tuple) else name
        label = (labels or {}).get(key, f"{by}={key}")
        ax.hist(group[value], bins=40, alpha=0.5, label=f"{label} (n={len(group)})")
    ax.set(xlabel=xlabel or value, ylabel="number of items", title=title or value)
    ax.legend()
    return _save(fig, out)


def _save(fig: plt.Figure, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
