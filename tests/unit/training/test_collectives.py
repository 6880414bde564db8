from __future__ import annotations

import pytest
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


def _worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from raymeta.errors import RankDivergenceError

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        COUNTER.reset()
        grads = [torch.full((2,), float(rank)), torch.full((3,), 10.0 * rank)]
        all_reduce_mean_(grads, tag="meta_grad")
        same = [torch.ones(3)]
        assert_identical_across_ranks(same, what="theta")
        diverged = False
        try:
            assert_identical_across_ranks([torch.ones(3) * (1 + rank)], what="lambda")
        except RankDivergenceError as err:
            diverged = "lambda differ between ranks" in str(err)
        gathered = all_gather_flat(torch.tensor([float(rank)]))
        torch.save(
            {
                "grads": grads,
                "counts": dict(COUNTER.counts),
                "diverged": diverged,
                "gathered": gathered,
            },
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_average_count_and_detect_divergence(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, f"tcp://127.0.0.1:{port}", str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        res = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(res["grads"][0], torch.full((2,), 0.5))
        assert torch.equal(res["grads"][1], torch.full((3,), 5.0))
        assert res["counts"]["meta_grad"] == 1  # one collective for both tensors
        assert res["counts"]["checksum"] == 2
        assert res["diverged"]
        assert res["gathered"].reshape(-1).tolist() == [0.0, 1.0]
