"""Flattened collectives over ``torch.distributed`` for meta-gradients and checks.

Meta-learning loops synchronise *their own* gradients (DDP's reducer does not see
``torch.autograd.grad`` results), so they need a few explicit collectives:

* :func:`all_reduce_mean_` averages a list of tensors in place with **one**
  ``all_reduce`` on a flattened buffer (one collective per call, whatever the number
  of tensors).
* :func:`all_gather_flat` gathers one flat vector per rank, e.g. per-task losses.
* :func:`assert_identical_across_ranks` checks that replicated parameters have not
  drifted (all-gathers a bitwise checksum).

Every function is a no-op (or the trivial answer) when ``torch.distributed`` is not
initialised or the world size is 1, so the same loop runs in one process. Every
collective issued through this module increments :data:`COUNTER`, which tests read to
prove, e.g., "exactly one all-reduce of the meta-gradient per meta step".

Example:
    >>> import torch
    >>> grads = [torch.ones(2), torch.zeros(3)]
    >>> all_reduce_mean_(grads, tag="meta_grad")  # world size 1: unchanged
    >>> grads[0]
    tensor([1., 1.])
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from raymeta.errors import RankDivergenceError

__all__ = [
    "COUNTER",
    "CollectiveCounter",
    "all_gather_flat",
    "all_gather_objects",
    "all_reduce_mean_",
    "assert_identical_across_ranks",
    "broadcast_",
    "is_distributed",
    "rank",
    "tensor_checksum",
    "world_size",
]


class CollectiveCounter:
    """Counts collectives issued through this module, per tag.

    Only real collectives (world size > 1) are counted.

    Attributes:
        counts: ``tag -> number of collectives`` since the last :meth:`reset`.
    """

    def __init__(self) -> None:
        """Start with all counts at zero."""
        self.counts: collections.Counter[str] = collections.Counter()

    def add(self, tag: str) -> None:
        """Record one collective under ``tag``."""
        self.counts[tag] += 1

    def reset(self) -> None:
        """Set every count back to zero."""
        self.counts.clear()

    def __getitem__(self, tag: str) -> int:
        return self.counts[tag]


COUNTER = CollectiveCounter()


def is_distributed() -> bool:
    """True when a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """World size of the default process group (1 when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """Rank in the default process group (0 when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def _flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _unflatten_into(flat: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def all_reduce_mean_(
    tensors: Sequence[torch.Tensor], *, tag: str = "all_reduce"
) -> None:
    """Average ``tensors`` over all ranks in place with one flattened all-reduce.

    Args:
        tensors: Tensors of any shapes and one dtype/device; overwritten with the
            mean over ranks.
        tag: Name under which :data:`COUNTER` records the collective.
    """
    if not tensors or not is_distributed():
        return
    flat = _flatten(tensors)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    COUNTER.add(tag)
    flat /= dist.get_world_size()
    with torch.no_grad():
        _unflatten_into(flat, tensors)


def broadcast_(
    tensors: Sequence[torch.Tensor], *, src: int = 0, tag: str = "broadcast"
) -> None:
    """Overwrite ``tensors`` on all ranks with rank ``src``'s values (1 collective)."""
    if not tensors or not is_distributed():
        return
    flat = _flatten(tensors)
    dist.broadcast(flat, src=src)
    COUNTER.add(tag)
    with torch.no_grad():
        _unflatten_into(flat, tensors)


def all_gather_flat(values: torch.Tensor, *, tag: str = "all_gather") -> torch.Tensor:
    """Gather one equal-length 1-D tensor per rank.

    Args:
        values: Shape ``(n,)``; every rank must pass the same ``n``.
        tag: Name under which :data:`COUNTER` records the collective.

    Returns:
        Shape ``(world_size, n)``; row ``r`` holds rank ``r``'s values.
    """
    values = values.detach().reshape(-1)
    if not is_distributed():
        return values.unsqueeze(0).clone()
    home = values.device
    if dist.get_backend() == "nccl":  # nccl gathers CUDA tensors only
        values = values.to(torch.device("cuda", torch.cuda.current_device()))
    out = [torch.empty_like(values) for _ in range(dist.get_world_size())]
    dist.all_gather(out, values)
    COUNTER.add(tag)
    return torch.stack(out).to(home)


def tensor_checksum(tensors: Sequence[torch.Tensor]) -> int:
    """A 63-bit checksum of the exact bytes of ``tensors`` (order-sensitive)."""
    digest = hashlib.blake2b(digest_size=8)
    for t in tensors:
        raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        digest.update(raw.numpy().tobytes())
    return int.from_bytes(digest.digest(), "little") >> 1


def assert_identical_across_ranks(
    tensors: Sequence[torch.Tensor], *, what: str, tag: str = "checksum"
) -> int:
    """Raise if ``tensors`` are not bit-identical on all ranks.

    Args:
        tensors: Replicated tensors (e.g. ``model.parameters()``).
        what: Name used in the error message (e.g. ``"base parameters"``).
        tag: Name under which :data:`COUNTER` records the collective.

    Returns:
        The local checksum.

    Raises:
        RankDivergenceError: The checksums differ; lists them per rank.
    """
    local = tensor_checksum(tensors)
    gathered = all_gather_flat(torch.tensor([local], dtype=torch.int64), tag=tag)
    sums = gathered.reshape(-1).tolist()
    if len(set(sums)) > 1:
        raise RankDivergenceError(
            f"{what} differ between ranks (checksums per rank: {sums}); replicated "
            "state must stay bit-identical - restore parameters by copy, not by "
            "adding and subtracting perturbations, and apply identical updates"
        )
    return local


def all_gather_objects(value: Any, *, tag: str = "all_gather_objects") -> list[Any]:
    """Gather one picklable object per rank (rank order); ``[value]`` without a group.

    For small, once-per-run results (e.g. per-shard example weights), not per step.
    """
    if not is_distributed():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    COUNTER.add(tag)
    return out
