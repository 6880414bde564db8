"""Ray Train adapter: per-worker loops for SAMA and HeTRoM on TorchTrainer.

Shared, method-agnostic parts: complete-state checkpoints
(:mod:`~raymeta.training.checkpointing`), flattened collectives with a counter
(:mod:`~raymeta.training.collectives`) and :func:`build_trainer`.
"""

from raymeta.training.checkpointing import (
    TrainingState,
    checkpoint_dir_name,
    load_checkpoint,
    newest_checkpoint,
    report_checkpoint,
    report_metrics,
    restore_from_ray,
    save_checkpoint,
)
from raymeta.training.collectives import (
    COUNTER,
    CollectiveCounter,
    all_gather_flat,
    all_reduce_mean_,
    assert_identical_across_ranks,
    broadcast_,
    tensor_checksum,
)
from raymeta.training.hetrom_loop import (
    HeTRoMComponents,
    build_hetrom_components,
    fit_hetrom,
    hetrom_summary,
    hetrom_train_loop,
    train_hetrom_in_process,
)
from raymeta.training.sama_loop import (
    fit_sama,
    preflight,
    sama_train_loop,
    summary_metrics,
    write_sama_results,
)
from raymeta.training.trainer import (
    build_trainer,
    fit_trainer,
    run_trainer,
    training_failed_error,
)

__all__ = [
    "COUNTER",
    "CollectiveCounter",
    "HeTRoMComponents",
    "TrainingState",
    "all_gather_flat",
    "all_reduce_mean_",
    "assert_identical_across_ranks",
    "broadcast_",
    "build_hetrom_components",
    "build_trainer",
    "checkpoint_dir_name",
    "fit_hetrom",
    "fit_sama",
    "fit_trainer",
    "hetrom_summary",
    "hetrom_train_loop",
    "load_checkpoint",
    "newest_checkpoint",
    "preflight",
    "report_checkpoint",
    "report_metrics",
    "restore_from_ray",
    "run_trainer",
    "sama_train_loop",
    "save_checkpoint",
    "summary_metrics",
    "tensor_checksum",
    "train_hetrom_in_process",
    "training_failed_error",
    "write_sama_results",
]
