from __future__ import annotations

import pytest
import torch

from raymeta.errors import MetaDataError
from raymeta.tasks.data import TaskData, validate_meta_tasks


def rand(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(
        n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def test_valid_task_is_float64_and_keeps_values():
    X = rand(4, 2).float()
    t = TaskData("a", X, torch.arange(4.0))
    assert t.X.dtype == torch.float64 and t.y.dtype == torch.float64
    assert (t.n, t.dim) == (4, 2)
    assert torch.equal(t.y, torch.arange(4.0, dtype=torch.float64))


def test_n_by_1_y_is_flattened():
    t = TaskData("a", rand(3, 2), torch.zeros(3, 1))
    assert t.y.shape == (3,)


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (torch.zeros(0, 2), torch.zeros(0), "task 'bad': the task is empty"),
        (
            torch.tensor([[0.1, float("nan")]]),
            torch.zeros(1),
            "task 'bad': X contains NaN",
        ),
        (
            torch.tensor([[0.1, 0.2]]),
            torch.tensor([float("inf")]),
            "task 'bad': y contains NaN or inf",
        ),
        (torch.zeros(3, 2), torch.zeros(2), r"task 'bad': y must have shape \(3,\)"),
        (torch.zeros(3, 2), torch.zeros(3, 2), r"task 'bad': y must have shape \(3,\)"),
        (torch.zeros(3), torch.zeros(3), "task 'bad': X must be n x d"),
        (
            torch.full((2, 2), 1.5),
            torch.zeros(2),
            r"task 'bad': X must lie in \[0, 1\]\^d",
        ),
    ],
)
def test_bad_task_raises_meta_data_error_naming_task(X, y, match):
    with pytest.raises(MetaDataError, match=match):
        TaskData("bad", X, y)


def test_non_tensor_input_is_rejected():
    with pytest.raises(MetaDataError, match="must be torch tensors"):
        TaskData("bad", [[0.1, 0.2]], torch.zeros(1))


def test_content_hash_ignores_row_order_but_not_content():
    X, y = rand(6, 3), torch.arange(6.0)
    perm = torch.tensor([3, 1, 5, 0, 2, 4])
    a = TaskData("a", X, y)
    assert a.content_hash() == TaskData("other-id", X[perm], y[perm]).content_hash()
    assert a.content_hash() != TaskData("a", X, y + 1e-9).content_hash()
    assert a.content_hash() != TaskData("a", X[:5], y[:5]).content_hash()


def test_validate_meta_tasks_checks_dims_ids_and_types():
    a, b = (
        TaskData("a", rand(3, 2), torch.zeros(3)),
        TaskData("b", rand(3, 3), torch.zeros(3)),
    )
    validate_meta_tasks([a])
    validate_meta_tasks([])
    with pytest.raises(
        MetaDataError, match="task 'b' has dimension 3 but task 'a' has 2"
    ):
        validate_meta_tasks([a, b])
    with pytest.raises(MetaDataError, match="task 'a' appears twice"):
        validate_meta_tasks([a, a])
    with pytest.raises(MetaDataError, match="must be TaskData objects"):
        validate_meta_tasks([a, (rand(3, 2), torch.zeros(3))])
