from __future__ import annotations

import torch

from raymeta.training.collectives import (
    COUNTER,
    all_gather_flat,
    all_reduce_mean_,
    assert_identical_across_ranks,
    tensor_checksum,
)


def test_single_process_collectives_are_no_ops_and_not_counted() -> None:
    COUNTER.reset()
    grads = [torch.ones(2, 2), torch.arange(3.0)]
    all_reduce_mean_(grads)
    assert torch.equal(grads[1], torch.arange(3.0))
    gathered = all_gather_flat(torch.tensor([1.0, 2.0]))
    assert gathered.shape == (1, 2)
    assert_identical_across_ranks(grads, what="x")
    assert sum(COUNTER.counts.values()) == 0


def test_checksum_sees_a_single_bit_flip() -> None:
    a = torch.tensor([1.0, 2.0], dtype=torch.float64)
    b = a.clone()
    b[1] = torch.nextafter(b[1], torch.tensor(3.0, dtype=torch.float64))
    assert tensor_checksum([a]) == tensor_checksum([a.clone()])
    assert tensor_checksum([a]) != tensor_checksum([b])
