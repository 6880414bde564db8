"""Writer processes for the store's concurrency and crash tests (spawned children)."""

from __future__ import annotations

import os
import time

from raymeta.results import ResultStore


def write_many(root: str, writer: int, appends: int, rows: int) -> None:
    store = ResultStore(root)
    for seq in range(appends):
        batch = [
            {
                "experiment": f"exp-{writer % 2}",
                "run_id": f"w{writer}",
                "step": seq,
                "name": "row",
                "value": float(r),
                "rank": r,
            }
            for r in range(rows)
        ]
        store.append("metrics", batch, key=(writer, seq))


def append_then_hang_before_rename(root: str, rows: int) -> None:
    """Write the temporary file completely, then block where the rename would be."""
    import raymeta.results.store as store_module

    def hang(src, dst):
        open(os.path.join(root, "hung"), "w").close()
        time.sleep(600)

    store_module.os.replace = hang
    big_append(root, rows)


def big_append(root: str, rows: int) -> None:
    batch = {
        "experiment": ["e"] * rows,
        "name": ["n"] * rows,
        "value": [1.0] * rows,
        "step": list(range(rows)),
    }
    import pandas as pd

    ResultStore(root).append("metrics", pd.DataFrame(batch), key="the-batch")
