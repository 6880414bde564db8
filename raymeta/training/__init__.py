"""Ray Train adapter: SAMA and HeTRoM as programs on one worker skeleton.

:func:`fit` trains either method from its config; :mod:`~raymeta.training.skeleton`
owns the step loop, restore, reports, checkpoints, rank checks and keyed result
writes; the methods are :class:`~raymeta.training.sama_program.SamaProgram` and
:class:`~raymeta.training.hetrom_program.HeTRoMProgram`. Shared, method-agnostic
parts: complete-state checkpoints (:mod:`~raymeta.training.checkpointing`),
flattened collectives with a counter (:mod:`~raymeta.training.collectives`) and
:func:`build_trainer`.
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
from raymeta.training.fit import fit, preflight
from raymeta.training.hetrom_program import (
    HeTRoMComponents,
    build_hetrom_components,
    train_hetrom_in_process,
)
from raymeta.training.results import (
    hetrom_summary,
    read_summary,
    summary_metrics,
)
from raymeta.training.skeleton import WorkerContext, WorkerProgram, run_program
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
    "WorkerContext",
    "WorkerProgram",
    "all_gather_flat",
    "all_reduce_mean_",
    "assert_identical_across_ranks",
    "broadcast_",
    "build_hetrom_components",
    "build_trainer",
    "checkpoint_dir_name",
    "fit",
    "fit_trainer",
    "hetrom_summary",
    "load_checkpoint",
    "newest_checkpoint",
    "preflight",
    "read_summary",
    "report_checkpoint",
    "report_metrics",
    "restore_from_ray",
    "run_program",
    "run_trainer",
    "save_checkpoint",
    "summary_metrics",
    "tensor_checksum",
    "train_hetrom_in_process",
    "training_failed_error",
]
