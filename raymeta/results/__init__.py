"""Arrow/Parquet results store: versioned schemas, atomic idempotent appends."""
