"""Versioned schemas of the built-in results tables, declared in one place.

Every table is a hive-partitioned Parquet dataset under ``<root>/<table>/``. A
:class:`TableSpec` fixes the table's columns, which of them are required (non-null in
every row), and the low-cardinality columns it is partitioned on. All built-in tables
are partitioned on ``experiment``.

Bump :data:`SCHEMA_VERSION` when a declared column changes; additive nullable columns
need no bump (the store accepts them and old rows read them as null).

Example:
    >>> spec = TABLES["metrics"]
    >>> spec.partition_cols
    ('experiment',)
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

__all__ = ["SCHEMA_VERSION", "TABLES", "TableSpec"]

SCHEMA_VERSION = 1

_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    """A results table: its schema, required columns and partition columns.

    Attributes:
        name: Table name; also its directory under the store root.
        schema: Declared Arrow schema (partition columns included).
        required: Columns every appended row must carry, non-null.
        partition_cols: Low-cardinality columns the dataset is hive-partitioned on.
        version: Schema version written into each file's metadata.
        volatile: Columns that legitimately differ when the same keyed append is
            retried (timings, timestamps); ignored when a retry's rows are compared
            with the rows already stored under its key.
    """

    name: str
    schema: pa.Schema
    required: tuple[str, ...]
    partition_cols: tuple[str, ...] = ("experiment",)
    version: int = SCHEMA_VERSION
    volatile: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Check that required and partition columns are declared."""
        missing = set(self.required + self.partition_cols) - set(self.schema.names)
        if missing:
            raise ValueError(f"table {self.name!r}: undeclared columns {missing}")
        for col in self.partition_cols:
            if not pa.types.is_string(self.schema.field(col).type):
                raise ValueError(
                    f"table {self.name!r}: partition {col!r} must be string"
                )


def _spec(
    name: str,
    required: tuple[str, ...],
    *fields: tuple[str, pa.DataType],
    volatile: tuple[str, ...] = (),
) -> TableSpec:
    schema = pa.schema([pa.field("experiment", pa.string()), *fields])
    return TableSpec(
        name=name, schema=schema, required=("experiment", *required), volatile=volatile
    )


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "trials",
            ("trial_id",),
            ("task_id", pa.string()),
            ("trial_id", pa.string()),
            ("attempt", pa.int64()),
            ("status", pa.string()),
            ("metric", pa.string()),
            ("value", pa.float64()),
            ("mode", pa.string()),
            ("config", pa.string()),  # JSON of the flattened "a/b" config
            ("searcher", pa.string()),
            ("seed", pa.int64()),
            ("time_total_s", pa.float64()),
            ("finished_at", _TS),
            volatile=("time_total_s", "finished_at"),
        ),
        _spec(
            "meta_tasks",
            ("task_hash", "state"),
            ("task_id", pa.string()),
            ("task_hash", pa.string()),
            ("n_points", pa.int64()),
            ("dim", pa.int64()),
            ("state", pa.binary()),
            ("fit_seconds", pa.float64()),
            ("created_at", _TS),
            # the same content fitted under another task name is the same state
            volatile=("task_id", "fit_seconds", "created_at"),
        ),
        _spec(
            "metrics",
            ("name", "value"),
            ("run_id", pa.string()),
            ("method", pa.string()),
            ("step", pa.int64()),
            ("name", pa.string()),
            ("value", pa.float64()),
            ("rank", pa.int64()),
            ("attempt", pa.int64()),
            ("wall_time_s", pa.float64()),
            volatile=("wall_time_s",),
        ),
        _spec(
            "data_weights",
            ("example_id", "weight"),
            ("run_id", pa.string()),
            ("example_id", pa.int64()),
            ("weight", pa.float64()),
            ("label", pa.int64()),
            ("observed_label", pa.int64()),
            ("is_noisy", pa.bool_()),
            ("split", pa.string()),
            ("step", pa.int64()),
        ),
        _spec(
            "task_stats",
            ("step", "loss"),
            ("run_id", pa.string()),
            ("step", pa.int64()),
            ("task_id", pa.string()),
            ("task_kind", pa.string()),
            ("loss", pa.float64()),
            ("rank_in_batch", pa.int64()),
            ("selected", pa.bool_()),
            ("dropped", pa.string()),
            ("threshold_upper", pa.float64()),
            ("threshold_lower", pa.float64()),
        ),
        _spec(
            "benchmarks",
            ("metric", "value"),
            ("benchmark", pa.string()),
            ("family", pa.string()),
            ("method", pa.string()),
            ("seed", pa.int64()),
            ("step", pa.int64()),
            ("metric", pa.string()),
            ("value", pa.float64()),
            ("machine", pa.string()),
            ("command", pa.string()),
            ("recorded_at", _TS),
            volatile=("recorded_at",),
        ),
    )
}
