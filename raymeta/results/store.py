"""The results store: one Arrow/Parquet dataset per table, safe to share.

Use :class:`ResultStore` for everything a run persists (trials, metrics, learned data
weights, task statistics, fitted meta-task GPs, benchmark figures). Layout::

    <root>/<table>/experiment=<name>/part-<id>.parquet   data (hive-partitioned)
    <root>/_schema/<table>/<column-hash>.arrow            columns added after v1
    <root>/_tmp/                                          in-flight writes

Guarantees:

- **Atomic appends.** A file is written under ``_tmp/`` and renamed into place, so a
  reader never sees a partial file; a writer killed mid-append leaves only an invisible
  temporary file (:meth:`ResultStore.gc` removes old ones). File names are uuids, so
  concurrent writers never collide. On object stores (``s3://`` ...) a single PUT is
  already atomic and files are written in place.
- **Idempotent appends.** ``append(..., key=K)`` names the files after ``K``; retrying
  the same append is a no-op instead of a duplicate.
- **Schema evolution.** A new nullable column is accepted (old rows read it as null); a
  type change of an existing column raises :class:`~raymeta.errors.SchemaMismatchError`
  naming the column and both types. Reads always use the unified schema, so columns that
  only later files have are never dropped.
- **Safe names.** Table names and partition values are validated, so no name can write
  outside the root.

The files are plain Parquet: ``pandas.read_parquet``, ``pyarrow.dataset`` and
``ray.data.read_parquet`` read ``<root>/<table>`` directly.

Example:
    >>> store = ResultStore(tmp_path)  # doctest: +SKIP
    >>> store.append("metrics", [{"experiment": "e1", "name": "loss", "value": 0.5}])
    1
    >>> store.to_pandas("metrics")["value"].tolist()
    [0.5]
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raymeta.errors import (
    SchemaMismatchError,
    StoreError,
    UnknownTableError,
)
from raymeta.names import validate_name
from raymeta.results.schema import TABLES, TableSpec

__all__ = ["ResultStore", "validate_name"]

Rows: TypeAlias = pd.DataFrame | pa.Table | Sequence[Mapping[str, Any]]


class ResultStore:
    """An Arrow/Parquet results store rooted at a local path or a filesystem URI.

    Args:
        root: Local directory (created if missing) or a pyarrow filesystem URI such
            as ``s3://bucket/prefix``.
        tables: Table specs to use instead of the built-in ones (``TABLES``); more
            can be added with :meth:`declare`.

    Raises:
        StoreError: The root cannot be created or is not a directory.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        tables: Mapping[str, TableSpec] | None = None,
    ) -> None:
        """Open (and create if needed) the store at ``root``."""
        self._fs, self._root = _resolve(root)
        self._uri = os.fspath(root) if "://" in os.fspath(root) else self._root
        self._specs: dict[str, TableSpec] = dict(TABLES if tables is None else tables)
        self._is_local = isinstance(self._fs, pafs.LocalFileSystem)
        try:
            self._fs.create_dir(self._root, recursive=True)
        except OSError as err:
            raise StoreError(
                f"cannot create results store root {self._root!r}: {err}; "
                "pass a directory you can write to"
            ) from None

    @property
    def root(self) -> str:
        """The store's root path on its filesystem."""
        return self._root

    def __repr__(self) -> str:
        """Show the root."""
        return f"ResultStore({self._root!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by root, so a store can be shipped to Ray workers."""
        return (_reopen, (self._uri, dict(self._specs)))

    # ------------------------------------------------------------------ tables
    def declare(self, spec: TableSpec) -> None:
        """Add a custom table; re-declaring the same spec is a no-op.

        Raises:
            InvalidNameError: The table name is unsafe.
            SchemaMismatchError: A different spec is already declared under the name.
        """
        validate_name(spec.name, what="table")
        known = self._specs.get(spec.name)
        if known is not None and known != spec:
            raise SchemaMismatchError(
                f"table {spec.name!r} is already declared differently"
            )
        self._specs[spec.name] = spec

    def tables(self) -> list[str]:
        """Names of the tables that hold data in this store."""
        infos = self._fs.get_file_info(
            pafs.FileSelector(self._root, allow_not_found=True)
        )
        names = (Path(i.path).name for i in infos if i.type == pafs.FileType.Directory)
        return sorted(n for n in names if not n.startswith(("_", ".")))

    def spec(self, table: str) -> TableSpec:
        """The declared spec of ``table``.

        Raises:
            UnknownTableError: The table is not declared.
        """
        try:
            return self._specs[table]
        except KeyError:
            raise UnknownTableError(
                f"unknown table {table!r}; declared tables are {sorted(self._specs)} "
                "(declare a custom one with ResultStore.declare(TableSpec(...)))"
            ) from None

    def schema(self, table: str) -> pa.Schema:
        """The unified schema: declared columns, then columns added later (sorted)."""
        spec = self.spec(table)
        extra = sorted(self._evolved_fields(table).values(), key=lambda f: f.name)
        return pa.schema(list(spec.schema) + extra)

    # ------------------------------------------------------------------ writing
    def append(
        self, table: str, data: Rows, *, key: str | Sequence[Any] | None = None
    ) -> int:
        """Append rows to ``table`` atomically; with ``key``, at most once.

        Args:
            table: A declared table name (see :data:`~raymeta.results.schema.TABLES`).
            data: A pandas DataFrame, a pyarrow Table or a list of dicts.
            key: Idempotency key (a string or a sequence of parts such as
                ``(experiment, trial_id, attempt)``). An append whose key was already
                written is a no-op; if its rows differ from the stored ones (beyond
                the table's ``volatile`` timing columns) the stored rows are kept
                and a warning names the key and the differing columns, since a key
                reused for other data is a caller's bug that would lose rows.

        Returns:
            The number of rows written (0 when the key was already present).

        Raises:
            UnknownTableError: ``table`` is not declared.
            SchemaMismatchError: A required column is missing or null, or a column's
                type conflicts with the table's schema.
            InvalidNameError: A partition value (e.g. the experiment) is unsafe.
            StoreError: The store cannot be written.
        """
        spec = self.spec(table)
        arrow = self._conform(spec, _to_arrow(data, table))
        if arrow.num_rows == 0:
            return 0
        groups = _partition_groups(arrow, spec.partition_cols)
        key_id = _key_id(key)
        targets = [
            (self._data_path(spec, values, key_id), part) for values, part in groups
        ]
        if key_id is not None:
            stored = {p for p, _ in targets if self._exists(p)}
            for path, part in targets:
                if path in stored:
                    self._warn_if_different(spec, path, part, key)
            targets = [(p, t) for p, t in targets if p not in stored]
            if not targets:
                return 0
        for path, part in targets:
            self._write_file(spec, path, part.drop_columns(list(spec.partition_cols)))
        return sum(t.num_rows for _, t in targets)

    def _conform(self, spec: TableSpec, data: pa.Table) -> pa.Table:
        """Cast to the declared types, fill missing nullable columns, check extras."""
        for col in spec.required:
            if col not in data.column_names:
                raise SchemaMismatchError(
                    f"table {spec.name!r}: required column {col!r} is missing; "
                    f"got columns {data.column_names}"
                )
            if data.column(col).null_count:
                raise SchemaMismatchError(
                    f"table {spec.name!r}: required column {col!r} has "
                    f"{data.column(col).null_count} null value(s)"
                )
        for col in spec.partition_cols:
            for value in pc.unique(data.column(col).cast(pa.string())).to_pylist():
                validate_name(value, what=col)
        columns = {f.name: _cast(spec.name, f, data, f.name) for f in spec.schema}
        evolved = self._evolved_fields(spec.name)
        for name in sorted(set(data.column_names) - set(spec.schema.names)):
            field = evolved.get(name) or self._register_field(
                spec.name, name, data.column(name).type
            )
            if field is not None:
                columns[name] = _cast(spec.name, field, data, name)
        return pa.table(columns)

    def _write_file(self, spec: TableSpec, path: str, part: pa.Table) -> None:
        meta = {
            b"raymeta.table": spec.name.encode(),
            b"raymeta.schema_version": str(spec.version).encode(),
        }
        part = part.replace_schema_metadata(meta)
        self._fs.create_dir(str(Path(path).parent), recursive=True)
        try:
            if not self._is_local:  # object stores: one PUT is atomic
                with self._fs.open_output_stream(path) as sink:
                    pq.write_table(part, sink)
                return
            tmp_dir = Path(self._root, "_tmp")
            tmp_dir.mkdir(exist_ok=True)
            tmp = tmp_dir / f"{uuid.uuid4().hex}.parquet"
            try:
                pq.write_table(part, tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as err:
            raise StoreError(
                f"cannot write to results store {self._root!r}: {err}; "
                "check the path exists and is writable"
            ) from None

    def _warn_if_different(
        self, spec: TableSpec, path: str, part: pa.Table, key: Any
    ) -> None:
        """Warn when a keyed retry carries other rows than the ones stored."""
        new = part.drop_columns(list(spec.partition_cols))
        old = pq.read_table(path, filesystem=self._fs)
        columns = [
            c
            for c in new.column_names
            if c in old.column_names and c not in spec.volatile
        ]
        differing = [
            c
            for c in columns
            if old.num_rows != new.num_rows
            or not old.column(c).equals(new.column(c).cast(old.schema.field(c).type))
        ]
        if differing:
            warnings.warn(
                f"results store: table {spec.name!r} already holds rows under key "
                f"{key!r} ({old.num_rows} row(s)); the {new.num_rows} new row(s) "
                f"differ in column(s) {differing}, so they were NOT written; use a "
                "new key for new data",
                stacklevel=3,
            )

    def _data_path(
        self, spec: TableSpec, values: tuple[str, ...], key_id: str | None
    ) -> str:
        dirs = [f"{c}={v}" for c, v in zip(spec.partition_cols, values, strict=True)]
        name = (
            f"part-k{key_id}.parquet" if key_id else f"part-{uuid.uuid4().hex}.parquet"
        )
        return "/".join(
            [self._root, validate_name(spec.name, what="table"), *dirs, name]
        )

    def _exists(self, path: str) -> bool:
        return self._fs.get_file_info(path).type != pafs.FileType.NotFound

    # ------------------------------------------------------------ schema evolution
    def _schema_dir(self, table: str) -> str:
        return f"{self._root}/_schema/{table}"

    def _evolved_fields(self, table: str) -> dict[str, pa.Field]:
        selector = pafs.FileSelector(self._schema_dir(table), allow_not_found=True)
        fields: dict[str, pa.Field] = {}
        for info in self._fs.get_file_info(selector):
            if info.path.endswith(".arrow"):
                with self._fs.open_input_file(info.path) as f:
                    field = pa.ipc.read_schema(f).field(0)
                fields[field.name] = field
        return fields

    def _register_field(
        self, table: str, name: str, dtype: pa.DataType
    ) -> pa.Field | None:
        """Record a new column's type once; an all-null column has nothing to record."""
        if pa.types.is_null(dtype):
            return None
        field = pa.field(name, dtype, nullable=True)
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        path = f"{self._schema_dir(table)}/{digest}.arrow"
        payload = pa.schema([field]).serialize().to_pybytes()
        self._fs.create_dir(self._schema_dir(table), recursive=True)
        if self._is_local:
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            Path(tmp).write_bytes(payload)
            try:
                os.link(tmp, path)  # atomic create-if-absent: the first writer wins
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        elif not self._exists(path):
            with self._fs.open_output_stream(path) as sink:
                sink.write(payload)
        winner = self._evolved_fields(table)[name]
        if winner.type != dtype and not _can_cast(dtype, winner.type):
            raise _type_error(table, name, winner.type, dtype)
        return winner

    # ------------------------------------------------------------------ reading
    def read(
        self, table: str, *, filters: Any = None, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """Read a table with its unified schema.

        Args:
            table: A declared table name.
            filters: A ``pyarrow.compute.Expression`` or DNF filters as accepted by
                ``pandas.read_parquet`` (e.g. ``[("experiment", "=", "e1")]``).
            columns: Columns to return (default: all, in schema order).

        Returns:
            A pyarrow Table; empty (with the schema) when nothing was written yet.

        Raises:
            UnknownTableError: ``table`` is not declared.
            SchemaMismatchError: A requested column does not exist.
        """
        schema = self.schema(table)
        if columns is not None:
            unknown = [c for c in columns if c not in schema.names]
            if unknown:
                raise SchemaMismatchError(
                    f"table {table!r} has no column(s) {unknown}; "
                    f"columns are {schema.names}"
                )
        path = f"{self._root}/{table}"
        if not self._exists(path):
            empty = schema.empty_table()
            return empty.select(list(columns)) if columns is not None else empty
        partitioning = ds.partitioning(
            pa.schema([schema.field(c) for c in self.spec(table).partition_cols]),
            flavor="hive",
        )
        dataset = ds.dataset(
            path,
            schema=schema,
            format="parquet",
            filesystem=self._fs,
            partitioning=partitioning,
        )
        expr = (
            pq.filters_to_expression(filters) if isinstance(filters, list) else filters
        )
        return dataset.to_table(
            columns=list(columns) if columns is not None else None, filter=expr
        )

    def to_pandas(
        self, table: str, *, filters: Any = None, columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Like :meth:`read`, as a pandas DataFrame."""
        return self.read(table, filters=filters, columns=columns).to_pandas()

    def files(self, table: str) -> list[str]:
        """Paths of the table's committed data files (sorted)."""
        selector = pafs.FileSelector(
            f"{self._root}/{table}", allow_not_found=True, recursive=True
        )
        infos = self._fs.get_file_info(selector)
        return sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File and i.path.endswith(".parquet")
        )

    def gc(self, *, older_than_s: float = 3600.0) -> int:
        """Delete temporary files left by killed writers; return how many went."""
        if not self._is_local:
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        root = Path(self._root)
        leftovers = [
            *root.glob("_tmp/*.parquet"),
            *root.glob("_schema/*/*.arrow.*.tmp"),
        ]
        for tmp in leftovers:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink(missing_ok=True)
                removed += 1
        return removed


# ---------------------------------------------------------------------- helpers
def _reopen(uri: str, specs: dict[str, TableSpec]) -> ResultStore:
    return ResultStore(uri, tables=specs)


def _resolve(root: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    text = os.fspath(root)
    if "://" in text:
        try:
            return pafs.FileSystem.from_uri(text)
        except (pa.ArrowInvalid, OSError) as err:
            raise StoreError(f"cannot open results store URI {text!r}: {err}") from None
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def _to_arrow(data: Rows, table: str) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, Iterable) and not isinstance(data, str | bytes | Mapping):
        rows = list(data)
        if all(isinstance(r, Mapping) for r in rows):
            return pa.Table.from_pylist(rows)
    raise SchemaMismatchError(
        f"table {table!r}: data must be a pandas DataFrame, a pyarrow Table or a "
        f"list of dicts; got {type(data).__name__}"
    )


def _can_cast(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether values of ``source`` type may be stored in a ``target`` column."""
    if source == target or pa.types.is_null(source):
        return True
    if pa.types.is_integer(source):
        return pa.types.is_integer(target) or pa.types.is_floating(target)
    if pa.types.is_floating(source):
        return pa.types.is_floating(target)
    if pa.types.is_dictionary(source):
        return _can_cast(source.value_type, target)
    if pa.types.is_large_string(source) or pa.types.is_string(source):
        return pa.types.is_string(target) or pa.types.is_large_string(target)
    if pa.types.is_timestamp(source):
        return pa.types.is_timestamp(target)
    if pa.types.is_binary(source) or pa.types.is_large_binary(source):
        return pa.types.is_binary(target) or pa.types.is_large_binary(target)
    return False


def _type_error(
    table: str, column: str, expected: pa.DataType, got: pa.DataType
) -> SchemaMismatchError:
    return SchemaMismatchError(
        f"table {table!r}: column {column!r} has type {expected} in the store but "
        f"the data have type {got}; convert the column to {expected} or use a new "
        "column name"
    )


def _cast(
    table: str, field: pa.Field, data: pa.Table, name: str
) -> pa.Array | pa.ChunkedArray:
    if name not in data.column_names:
        return pa.nulls(data.num_rows, type=field.type)
    column = data.column(name)
    if not _can_cast(column.type, field.type):
        raise _type_error(table, name, field.type, column.type)
    if pa.types.is_timestamp(column.type) and column.type.tz is None and field.type.tz:
        column = pc.assume_timezone(column, field.type.tz)
    try:
        return column.cast(field.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise SchemaMismatchError(f"table {table!r}: column {name!r}: {err}") from None


def _partition_groups(
    data: pa.Table, cols: tuple[str, ...]
) -> list[tuple[tuple[str, ...], pa.Table]]:
    if not cols:
        return [((), data)]
    keys = data.select(list(cols)).group_by(list(cols)).aggregate([]).to_pylist()
    groups = []
    for combo in sorted(keys, key=lambda k: tuple(k[c] for c in cols)):
        mask = None
        for c in cols:
            eq = pc.equal(data.column(c), combo[c])
            mask = eq if mask is None else pc.and_(mask, eq)
        groups.append((tuple(combo[c] for c in cols), data.filter(mask)))
    return groups


def _key_id(key: str | Sequence[Any] | None) -> str | None:
    if key is None:
        return None
    text = key if isinstance(key, str) else "\x1f".join(map(str, key))
    return hashlib.sha256(text.encode()).hexdigest()[:32]
