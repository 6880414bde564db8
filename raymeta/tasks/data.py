"""Per-task observation tables for meta-learning Bayesian optimisation.

A :class:`TaskData` holds one task's observations ``(X, y)`` with inputs already mapped
to the unit cube and outputs in the minimisation convention. Everything is validated
on construction, so a malformed task is rejected with a :class:`MetaDataError` naming
it, long before any GP fit.

Example:
    >>> import torch
    >>> t = TaskData("branin-0", torch.rand(5, 2, dtype=torch.float64),
    ...              torch.zeros(5, dtype=torch.float64))
    >>> len(t.content_hash())
    40
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from raymeta.errors import MetaDataError

__all__ = ["TaskData", "validate_meta_tasks"]

_CUBE_TOL = 1e-9


@dataclass(frozen=True)
class TaskData:
    """One task's observations.

    Attributes:
        task_id: A name unique among the tasks of one meta-data set.
        X: ``n x d`` float64 inputs in the unit cube ``[0, 1]^d``.
        y: ``n`` float64 outputs, lower is better.
    """

    task_id: str
    X: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        """Validate shapes, dtypes and values; coerce to contiguous float64."""
        name = f"task {self.task_id!r}"
        if not isinstance(self.X, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise MetaDataError(
                f"{name}: X and y must be torch tensors; got "
                f"{type(self.X).__name__} and {type(self.y).__name__}"
            )
        X = self.X.detach().to(torch.float64).contiguous()
        y = self.y.detach().to(torch.float64).contiguous()
        if X.ndim != 2:
            raise MetaDataError(
                f"{name}: X must be n x d (2-D); got shape {tuple(X.shape)}"
            )
        if X.shape[0] == 0:
            raise MetaDataError(f"{name}: the task is empty (0 observations)")
        if X.shape[1] == 0:
            raise MetaDataError(f"{name}: X has 0 columns; expected d >= 1")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.reshape(-1)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise MetaDataError(
                f"{name}: y must have shape ({X.shape[0]},) to match X "
                f"{tuple(X.shape)}; got {tuple(self.y.shape)}"
            )
        for label, t in (("X", X), ("y", y)):
            if not torch.isfinite(t).all():
                raise MetaDataError(
                    f"{name}: {label} contains NaN or inf; drop or impute those rows"
                )
        if X.min() < -_CUBE_TOL or X.max() > 1 + _CUBE_TOL:
            raise MetaDataError(
                f"{name}: X must lie in [0, 1]^d; got values in "
                f"[{X.min().item():.4g}, {X.max().item():.4g}]; map inputs to the "
                "unit cube first"
            )
        object.__setattr__(self, "X", X.clamp(0.0, 1.0))
        object.__setattr__(self, "y", y)

    @property
    def n(self) -> int:
        """Number of observations."""
        return int(self.X.shape[0])

    @property
    def dim(self) -> int:
        """Input dimension d."""
        return int(self.X.shape[1])

    def sorted(self) -> TaskData:
        """The same task with rows in a canonical (lexicographic) order."""
        order = canonical_order(torch.cat([self.X, self.y[:, None]], dim=1))
        return TaskData(self.task_id, self.X[order], self.y[order])

    def content_hash(self) -> str:
        """SHA-1 of the (X, y) content, independent of the row order.

        Returns:
            40 hex characters; equal for tasks with the same set of rows.
        """
        canon = self.sorted()
        h = hashlib.sha1()
        h.update(str(tuple(canon.X.shape)).encode())
        h.update(canon.X.numpy().tobytes())
        h.update(canon.y.numpy().tobytes())
        return h.hexdigest()


def canonical_order(rows: torch.Tensor) -> torch.Tensor:
    """Indices that sort the rows of ``rows`` (``n x k``) lexicographically."""
    order = torch.arange(rows.shape[0])
    for col in reversed(range(rows.shape[1])):
        order = order[torch.sort(rows[order, col], stable=True).indices]
    return order


def validate_meta_tasks(tasks: Sequence[TaskData]) -> None:
    """Check a meta-data set: TaskData items, unique ids, equal input dimension.

    Args:
        tasks: The meta-tasks (may be empty).

    Raises:
        MetaDataError: Names the offending task and says what to fix.
    """
    seen: set[str] = set()
    dim: int | None = None
    first = ""
    for task in tasks:
        if not isinstance(task, TaskData):
            raise MetaDataError(
                f"meta-tasks must be TaskData objects; got {type(task).__name__}"
            )
        if task.task_id in seen:
            raise MetaDataError(
                f"task {task.task_id!r} appears twice; task ids must be unique"
            )
        seen.add(task.task_id)
        if dim is None:
            dim, first = task.dim, task.task_id
        elif task.dim != dim:
            raise MetaDataError(
                f"task {task.task_id!r} has dimension {task.dim} but task {first!r} "
                f"has {dim}; all tasks must share one search space"
            )
