"""Deterministic sample rows for any results-table schema."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa


def sample_value(field: pa.Field, i: int, experiment: str):
    t = field.type
    if field.name == "experiment":
        return experiment
    if pa.types.is_string(t):
        return f"{field.name}-{i}"
    if pa.types.is_integer(t):
        return i * 7 + 1
    if pa.types.is_floating(t):
        return i * 0.25 - 1.0
    if pa.types.is_boolean(t):
        return i % 2 == 0
    if pa.types.is_binary(t):
        return bytes([i % 256]) * 3
    if pa.types.is_timestamp(t):
        return dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i)
    raise AssertionError(f"no sample for {t}")


def sample_rows(schema: pa.Schema, n: int, experiment: str = "exp-1") -> list[dict]:
    return [{f.name: sample_value(f, i, experiment) for f in schema} for i in range(n)]


def canonical(rows: list[dict]) -> list[tuple]:
    """Order-free comparison key for rows (dict order and row order ignored)."""
    return sorted(tuple(sorted((k, str(v)) for k, v in r.items())) for r in rows)
