"""SAMA on a 2-worker TorchTrainer: DDP equivalence, collectives, fault tolerance.

The first two tests share one uninterrupted reference run (module fixture) to keep
the tier fast: a 60-step fp64 run of a linear classifier with a meta-weight-net on
noisy blobs, 2 gloo workers, a meta step every 2 steps, checkpoints every 10 steps.
The failure-budget test (C2 in users-and-reliability.md) runs the same setup with two
worker failures and ``max_failures=1``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from raymeta.config import parse_config
from raymeta.errors import TrainingFailedError
from raymeta.metalearn.models import build_mlp
from raymeta.metalearn.reweighting import MetaWeightNet, ReweightingProblem
from raymeta.metalearn.sama import sama_hypergradient
from raymeta.training import fit as fit_run
from raymeta.training.checkpointing import (
    load_checkpoint,
    newest_checkpoint,
    state_dict_checksum,
)
from raymeta.training.sama_program import SamaProgram
from raymeta.training.skeleton import WorkerContext

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CONFIG = dict(
    job="sama",
    seed=3,
    meta_lr=0.01,
    meta_hidden=8,
    radius=1e-3,
    unroll_steps=2,
    steps=60,
    batch_size=16,
    meta_batch_size=8,
    eval_every=10,
    report_every=10,
    checkpoint_every=10,
    check_every=1,
    data={"dataset": "blobs", "noise_rate": 0.3},
    model={"hidden": [], "dtype": "float64"},
    optim={"name": "adam", "lr": 0.05},
)


def config(tmp_path, name="run", *, steps=60, max_failures=0, timeout_minutes=2.0):
    return parse_config(
        {
            **CONFIG,
            "steps": steps,
            "scaling": {
                "num_workers": 2,
                "max_failures": max_failures,
                "timeout_minutes": timeout_minutes,
            },
            "storage": {"run_name": name, "storage_path": str(tmp_path / "runs")},
        }
    )


def fit(tmp_path, name, max_failures=0, timeout_minutes=2.0, **hooks):
    cfg = config(
        tmp_path, name, max_failures=max_failures, timeout_minutes=timeout_minutes
    )
    return fit_run(cfg, hooks=hooks)


@pytest.fixture(scope="module")
def reference(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sama-ref")
    (tmp / "debug").mkdir()
    result = fit(tmp, "reference", debug_dir=str(tmp / "debug"))
    return result, tmp / "debug"


def test_ddp_meta_gradient_is_the_mean_of_per_rank_sama(reference):
    result, debug = reference
    summary = result.return_value
    assert result.error is None
    # one all-reduce of the meta-gradient per meta step (60 steps / unroll 2)
    assert summary["meta_steps"] == 30
    assert summary["meta_grad_collectives_this_attempt"] == 30
    # θ and λ bit-identical on both ranks (also asserted after every meta step)
    assert len(set(summary["rank_checksums"])) == 1
    assert summary["world_size"] == 2

    # Recompute each rank's first meta step in one process and average.
    dumps = [torch.load(debug / f"meta_step_rank{r}.pt") for r in (0, 1)]
    per_rank = []
    for dump in dumps:
        model = build_mlp([5, 2], generator=torch.Generator(), dtype=torch.float64)
        model.load_state_dict(dump["model"])
        mwn = MetaWeightNet(8, dtype=torch.float64)
        mwn.load_state_dict(dump["meta"])
        opt = torch.optim.Adam(model.parameters(), lr=CONFIG["optim"]["lr"])
        opt.load_state_dict(dump["opt"])
        for p, g in zip(model.parameters(), dump["last_grads"]):
            p.grad = g
        res = sama_hypergradient(
            ReweightingProblem(),
            model,
            mwn,
            dump["base_batch"],
            dump["meta_batch"],
            opt,
            radius=CONFIG["radius"],
        )
        per_rank.append(torch.cat([g.reshape(-1) for g in res.grads]))
    mean = (per_rank[0] + per_rank[1]) / 2
    reduced = [torch.cat([g.reshape(-1) for g in d["reduced"]]) for d in dumps]
    assert torch.equal(reduced[0], reduced[1])
    assert float((reduced[0] - mean).norm() / mean.norm()) < 1e-6
    # the per-rank estimates really differ (the average is not trivially one rank's)
    assert float((per_rank[0] - per_rank[1]).norm() / mean.norm()) > 1e-3


def test_worker_failure_resumes_from_checkpoint_and_matches_reference(
    reference, tmp_path
):
    ref_result, _ = reference
    start = time.monotonic()
    result = fit(
        tmp_path,
        "failing",
        max_failures=1,
        fail_once_at_step=30,
        fail_rank=1,
        fail_marker=str(tmp_path / "failed-once"),
    )
    elapsed = time.monotonic() - start
    assert (tmp_path / "failed-once").exists()  # the failure really happened
    assert result.error is None
    summary, ref = result.return_value, ref_result.return_value
    assert summary["attempt"] == 2
    assert summary["restored_from_step"] == 30
    assert summary["steps"] == 60
    for key in ("base_params", "meta_params"):
        got, want = torch.as_tensor(summary[key]), torch.as_tensor(ref[key])
        assert torch.allclose(got, want, atol=1e-6, rtol=0), key
    after = {r["step"]: r for r in summary["history"] if r["step"] > 30}
    ref_after = {r["step"]: r for r in ref["history"] if r["step"] > 30}
    assert sorted(after) == [40, 50, 60]
    for step, row in after.items():
        assert row["attempt"] == 2 and row["restored_from_step"] == 30
        assert abs(row["meta_loss"] - ref_after[step]["meta_loss"]) < 1e-6
    print(f"fit with one worker failure took {elapsed:.1f} s")


def test_failure_budget_exhausted_raises_naming_the_restore_path(ray_local, tmp_path):
    cfg = config(tmp_path, "budget", max_failures=1)
    marker = tmp_path / "failures"
    hooks = dict(fail_at_steps=[20, 40], fail_rank=1, fail_marker=str(marker))
    with pytest.raises(TrainingFailedError, match="restore path") as err:
        fit_run(cfg, hooks=hooks)
    raised_at = time.time()
    # both failures really happened, and fit() returned soon after the second
    assert marker.read_text().splitlines() == [
        "rank 1 exited at step 20",
        "rank 1 exited at step 40",
    ]
    assert raised_at - marker.stat().st_mtime < 120
    print(f"raised {raised_at - marker.stat().st_mtime:.1f} s after the 2nd failure")
    newest = newest_checkpoint(cfg.storage_path, "budget")
    assert newest is not None and newest.name == "checkpoint_step000000040"
    assert str(newest) in str(err.value) and "max_failures=1" in str(err.value)

    ctx = WorkerContext(cfg, 0, 1, torch.device("cpu"), {}, {}, in_ray=False)
    run = SamaProgram(ctx)
    fresh = state_dict_checksum(run.state.modules)
    assert load_checkpoint(run.state, newest, rank=0) == 40
    saved = run.state.extra["state_checksum"]
    assert saved["step"] == 40
    assert state_dict_checksum(run.state.modules) == saved["value"] != fresh
    assert run.state.attempt == 3  # the checkpoint was written by attempt 2


def test_rerun_with_same_name_resumes_and_results_reach_the_store(ray_local, tmp_path):
    from raymeta.config import load_config, override
    from raymeta.results import ResultStore

    cfg = override(
        load_config("jobs/configs/sama_tiny.toml"),
        {
            "storage.storage_path": str(tmp_path / "runs"),
            "storage.store": str(tmp_path / "store"),
            "storage.run_name": "tiny",
            # Ray's local mode (0 workers) keeps checkpoints in memory only
            "scaling.num_workers": 1,
        },
    )
    first = fit_run(cfg).return_value
    assert (first["steps"], first["attempt"]) == (20, 1)
    longer = override(cfg, {"steps": 30})
    second = fit_run(longer).return_value
    assert second["restored_from_step"] == 20 and second["attempt"] == 2
    assert second["steps"] == 30

    store = ResultStore(str(tmp_path / "store"))
    weights = store.to_pandas("data_weights")
    # written by rank 0 at the end of each finished run, keyed by its final step
    assert weights.groupby("step").size().to_dict() == {20: 128, 30: 128}
    last = weights[weights["step"] == 30].sort_values("example_id")
    assert last["is_noisy"].tolist() == list(second["is_noisy"])
    metrics = store.to_pandas("metrics")
    final = metrics[metrics["name"] == "summary/test_acc"].sort_values("step")
    assert final["step"].tolist() == [20, 30]
    assert final["value"].tolist() == [first["test_acc"], second["test_acc"]]


# C3 (hang instead of crash). Rank 1 sends itself SIGSTOP right before the
# meta-gradient all-reduce; rank 0 blocks in that all-reduce until the gloo timeout
# (TorchConfig(timeout_s=30)) fails it. The spec says step 25; with unroll_steps=2
# step 25 has no meta step, so the stop happens at step 26, the first meta step after
# it. The newest checkpoint before it is step 20.
STOP_STEP = 26
HANG_LIMIT_S = 90  # ray #22349: without a collective timeout the hang lasts 30 min


def _stopped_pid(marker):
    """PID of the rank that stopped itself (from the hook's marker line), if any."""
    if not marker.exists():
        return None
    return int(marker.read_text().split()[-1])


def _process_state(pid):
    """The /proc state letter of ``pid`` ("T" = stopped), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _reaped(pid, wait_s=20.0):
    """True once ``pid`` no longer exists (zombies count as alive), polling."""
    deadline = time.monotonic() + wait_s
    while _process_state(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    return _process_state(pid) is None


def _kill_if_still_stopped(pid):
    """Clean-up: SIGKILL a leaked, still stopped Ray worker (by PID, checked)."""
    if pid is None or _process_state(pid) != "T":
        return
    if b"ray::" in Path(f"/proc/{pid}/cmdline").read_bytes():
        os.kill(pid, signal.SIGKILL)


def test_stopped_worker_times_out_restarts_and_matches_reference(reference, tmp_path):
    ref_result, _ = reference
    marker = tmp_path / "stopped-once"
    try:
        result = fit(
            tmp_path,
            "stopped",
            max_failures=1,
            timeout_minutes=0.5,
            stop_at_step=STOP_STEP,
            fail_rank=1,
            fail_marker=str(marker),
        )
        pid = _stopped_pid(marker)
        assert marker.read_text().splitlines() == [
            f"rank 1 stopped at step {STOP_STEP} pid {pid}"
        ]
        assert result.error is None
        summary, ref = result.return_value, ref_result.return_value
        restart_s = summary["attempt_started_at"] - marker.stat().st_mtime
        print(f"SIGSTOP -> restarted attempt began: {restart_s:.1f} s")
        assert 0 < restart_s < HANG_LIMIT_S
        assert summary["attempt"] == 2
        resumed = summary["restored_from_step"]
        print(f"resumed from step {resumed}")
        assert resumed == 20, (
            f"resumed from step {resumed}: the step-20 checkpoint was reported but "
            "not registered before rank 1 stopped (see the hook's pause)"
        )
        assert summary["steps"] == 60
        for key in ("base_params", "meta_params"):
            got, want = torch.as_tensor(summary[key]), torch.as_tensor(ref[key])
            assert torch.allclose(got, want, atol=1e-6, rtol=0), key
        # Ray killed the stopped worker when it tore the group down
        assert _reaped(pid), f"stopped worker {pid} leaked ({_process_state(pid)})"
    finally:
        _kill_if_still_stopped(_stopped_pid(marker))


def test_stopped_worker_without_restarts_fails_instead_of_hanging(ray_local, tmp_path):
    cfg = config(tmp_path, "stopped", steps=20, timeout_minutes=0.5)
    marker = tmp_path / "stopped"
    hooks = dict(stop_at_step=12, fail_rank=1, fail_marker=str(marker))
    try:
        with pytest.raises(TrainingFailedError, match="max_failures=0") as err:
            fit_run(cfg, hooks=hooks)
        hang_s = time.time() - marker.stat().st_mtime
        print(f"SIGSTOP -> TrainingFailedError: {hang_s:.1f} s")
        assert hang_s < HANG_LIMIT_S
        newest = newest_checkpoint(cfg.storage_path, "stopped")
        assert newest is not None and newest.name == "checkpoint_step000000010"
        assert str(newest) in str(err.value)
        pid = _stopped_pid(marker)
        assert _reaped(pid), f"stopped worker {pid} leaked ({_process_state(pid)})"
    finally:
        _kill_if_still_stopped(_stopped_pid(marker))
