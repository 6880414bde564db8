"""Arrow/Parquet results store: versioned schemas, atomic idempotent appends.

Every raymeta run writes here; pandas, pyarrow and Ray Data read the files directly.
"""

from raymeta.results.atomic_fs import atomic_local_filesystem, remove_temporaries
from raymeta.results.schema import SCHEMA_VERSION, TABLES, TableSpec
from raymeta.results.store import ResultStore, validate_name

__all__ = [
    "SCHEMA_VERSION",
    "TABLES",
    "ResultStore",
    "TableSpec",
    "atomic_local_filesystem",
    "remove_temporaries",
    "validate_name",
]
