"""plot_lines draws the median per x and the band its Band computes from the repeats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raymeta.errors import SchemaMismatchError
from raymeta.results.plots import QUARTILES, Band, plot_lines


def _curves() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "step": np.tile(np.arange(1, 6), 8),
            "seed": np.repeat(np.arange(8), 5),
            "regret": rng.lognormal(size=40),
            "method": np.repeat(["a", "b"], 20),
        }
    )


def test_the_band_sees_the_repeats_at_each_x(tmp_path: Path) -> None:
    df = _curves()
    seen: list[np.ndarray] = []

    def bounds(values: np.ndarray) -> tuple[float, float]:
        seen.append(np.sort(values))
        return float(values.min()), float(values.max())

    out = plot_lines(
        df, x="step", y="regret", by="method", out=tmp_path / "c.png",
        band=Band("range", bounds),
    )  # fmt: skip
    assert out.stat().st_size > 0
    expected = [
        np.sort(g.regret.to_numpy())
        for _, g in df.sort_values(["method", "step"]).groupby(["method", "step"])
    ]
    assert len(seen) == len(expected) == 10
    for got, want in zip(seen, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_quartiles_are_the_25_and_75_percent_quantiles() -> None:
    values = np.arange(101.0)
    assert QUARTILES.bounds(values) == (25.0, 75.0)


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(SchemaMismatchError, match="'loss'"):
        plot_lines(_curves(), x="step", y="loss", out=tmp_path / "c.png")
