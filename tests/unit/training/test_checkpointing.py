from __future__ import annotations

import json

import pytest
import torch

from raymeta.errors import TrainingSetupError
from raymeta.training.checkpointing import (
    TrainingState,
    checkpoint_dir_name,
    load_checkpoint,
    newest_checkpoint,
    save_checkpoint,
)


def make_state(seed: int) -> TrainingState:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    meta = torch.nn.Linear(1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    meta_opt = torch.optim.SGD(meta.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    gen = torch.Generator().manual_seed(seed + 100)
    return TrainingState(
        modules={"base": net, "meta": meta},
        optimizers={"base": opt, "meta": meta_opt},
        schedulers={"base": sched},
        generators={"data": gen},
    )


def advance(state: TrainingState, steps: int) -> None:
    net, meta = state.modules["base"], state.modules["meta"]
    for _ in range(steps):
        x = torch.randn(8, 3, generator=state.generators["data"])
        loss = net(torch.nn.functional.dropout(x, 0.5)).pow(2).mean()
        loss = loss + meta(loss.detach().view(1, 1)).sum()
        for opt in state.optimizers.values():
            opt.zero_grad()
        loss.backward()
        for opt in state.optimizers.values():
            opt.step()
        state.schedulers["base"].step()
        state.step += 1
        state.cursor["offset"] = state.step * 8


def flat(state: TrainingState) -> torch.Tensor:
    return torch.cat(
        [
            t.reshape(-1).float()
            for m in state.modules.values()
            for t in m.state_dict().values()
        ]
    )


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path) -> None:
    reference = make_state(0)
    advance(reference, 6)

    first = make_state(0)
    advance(first, 3)
    save_checkpoint(first, tmp_path, rank=0)
    torch.manual_seed(999)  # clobber the global RNG that dropout uses
    resumed = make_state(1)  # different init: everything must come from the files
    assert load_checkpoint(resumed, tmp_path, rank=0) == 3
    assert resumed.attempt == 2 and resumed.restored_from_step == 3
    assert resumed.cursor == {"offset": 24}
    advance(resumed, 3)
    assert torch.equal(flat(resumed), flat(reference))
    assert resumed.schedulers["base"].last_epoch == 6


def test_missing_rank_file_is_a_clear_error(tmp_path) -> None:
    save_checkpoint(make_state(0), tmp_path, rank=0)
    with pytest.raises(TrainingSetupError, match="lacks 'rank-1.pt'"):
        load_checkpoint(make_state(0), tmp_path, rank=1)


def test_unknown_saved_name_is_a_clear_error(tmp_path) -> None:
    save_checkpoint(make_state(0), tmp_path, rank=0)
    state = make_state(0)
    del state.optimizers["meta"]
    with pytest.raises(TrainingSetupError, match="optimizer named 'meta'"):
        load_checkpoint(state, tmp_path, rank=0)


def test_newest_checkpoint_picks_the_highest_step(tmp_path):
    assert newest_checkpoint(str(tmp_path), "run") is None
    for step in (9, 40, 20):
        (tmp_path / "run" / checkpoint_dir_name(step)).mkdir(parents=True)
    (tmp_path / "run" / "other").mkdir()
    assert newest_checkpoint(str(tmp_path), "run").name == "checkpoint_step000000040"


def test_newest_checkpoint_is_the_one_ray_registered(tmp_path):
    run = tmp_path / "run"
    for step in (10, 20):
        (run / checkpoint_dir_name(step)).mkdir(parents=True)
    snapshot = run / "checkpoint_manager_snapshot.json"
    # step 20 is on storage but Ray registered only step 10 (a rank hung after 20)
    latest = {"checkpoint_dir_name": checkpoint_dir_name(10), "metrics": {}}
    snapshot.write_text(json.dumps({"latest_checkpoint_result": latest}))
    assert newest_checkpoint(tmp_path, "run") == run / "checkpoint_step000000010"
    snapshot.write_text(json.dumps({"latest_checkpoint_result": None}))
    assert newest_checkpoint(tmp_path, "run") is None
    snapshot.write_text("{trunc")  # unreadable: fall back to the directories
    assert newest_checkpoint(tmp_path, "run") == run / "checkpoint_step000000020"
