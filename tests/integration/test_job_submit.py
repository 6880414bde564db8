"""`ray job submit` end to end: a real head, token auth, results in the store."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from raymeta.results import ResultStore
from raymeta.training.checkpointing import RAY_CHECKPOINT_SNAPSHOT
from tests.integration.ray_head import RayHead, start_head

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def head():
    head = start_head(num_cpus=2)
    yield head
    head.stop()


def submit(head: RayHead, *entrypoint: str, wait: bool = True) -> str:
    args = [
        "job",
        "submit",
        "--address",
        head.dashboard_url,
        "--working-dir",
        str(ROOT),
    ]
    args += [] if wait else ["--no-wait"]
    done = head.ray(*args, "--", "python", *entrypoint, check=False, timeout_s=900)
    output = done.stdout + done.stderr
    match = re.search(r"raysubmit_\w+", output)
    assert match, output[-3000:]
    if wait:
        assert done.returncode == 0 and " succeeded" in output, output[-5000:]
    return match.group(0)


def job_args(config: str | Path, tmp_path: Path) -> list[str]:
    return [
        str(config),
        "--store",
        str(tmp_path / "store"),
        "--storage-path",
        str(tmp_path / "runs"),
    ]


@pytest.mark.parametrize(
    ("script", "config", "table", "experiment"),
    [
        (
            "jobs/tune_scamlgp.py",
            "jobs/configs/tune_scamlgp_tiny.toml",
            "trials",
            "tune-scamlgp-tiny",
        ),
        (
            "jobs/train_sama.py",
            "jobs/configs/sama_tiny.toml",
            "data_weights",
            "sama_tiny",
        ),
        (
            "jobs/train_hetrom.py",
            "jobs/configs/hetrom_tiny.toml",
            "task_stats",
            "hetrom-tiny",
        ),
    ],
)
def test_job_submit_writes_results(head, tmp_path, script, config, table, experiment):
    submit(head, script, *job_args(config, tmp_path))
    rows = ResultStore(tmp_path / "store").to_pandas(table)
    assert len(rows) > 0 and set(rows["experiment"].astype(str)) >= {experiment}


# Enough trials that the job is still running when `ray job stop` (a CLI start of a
# few seconds) lands, also on a loaded 2-core machine (12 were all done in CI once).
TRIALS = 40


def test_resubmitting_an_interrupted_tuning_job_resumes_it(head, tmp_path):
    text = (ROOT / "jobs/configs/tune_scamlgp_tiny.toml").read_text()
    config = tmp_path / "tune.toml"
    config.write_text(
        re.sub(r"num_samples = \d+", f"num_samples = {TRIALS}", text).replace(
            'experiment = "tune-scamlgp-tiny"', 'experiment = "resume-me"'
        )
    )
    store = ResultStore(tmp_path / "store")
    job = submit(head, "jobs/tune_scamlgp.py", *job_args(config, tmp_path), wait=False)

    def done_trials() -> int:
        if "trials" not in store.tables():
            return 0
        return len(
            store.to_pandas("trials", filters=[("experiment", "=", "resume-me")])
        )

    deadline = time.monotonic() + 600
    while done_trials() < 3:
        assert time.monotonic() < deadline, head.ray(
            "job", "logs", "--address", head.dashboard_url, job
        ).stdout[-3000:]
        time.sleep(0.5)
    head.ray("job", "stop", "--address", head.dashboard_url, job)
    status = head.ray("job", "status", "--address", head.dashboard_url, job).stdout
    assert "stopped" in status.lower(), status
    interrupted = done_trials()
    assert interrupted < TRIALS

    job_id = submit(head, "jobs/tune_scamlgp.py", *job_args(config, tmp_path))
    logs = head.ray("job", "logs", "--address", head.dashboard_url, job_id).stdout
    assert f"resume-me: {TRIALS} trials" in logs, logs[-3000:]
    trials = store.to_pandas("trials", filters=[("experiment", "=", "resume-me")])
    # Restored, not restarted: a fresh run would add TRIALS rows to the interrupted
    # ones.
    # Only trials in flight at the stop (max_concurrent = 2) may have run twice.
    assert TRIALS <= len(trials) <= TRIALS + 2, (
        interrupted,
        trials[["trial_id", "status"]],
    )
    assert trials["trial_id"].is_unique


# ---------------------------------------------------------------- driver SIGKILL
# A training job's driver is killed (SIGKILL) mid-run; resubmitting the job with the
# same run name resumes from the last checkpoint, and the store ends with exactly the
# rows of an uninterrupted run: no row lost, none twice. Wall-clock metrics (timings,
# per-attempt collective counts) differ between runs and are left out of the
# comparison; everything else must match.
VOLATILE = {"ranking_time_s", "step_time_s", "meta_grad_collectives"}
SAMA_RUN = """job = "sama"
seed = 1
meta_lr = 0.01
meta_hidden = 8
radius = 1e-3
steps = 2000
batch_size = 16
meta_batch_size = 8
eval_every = 100
report_every = 50
checkpoint_every = 100
[data]
dataset = "blobs"
[model]
hidden = []
dtype = "float64"
[optim]
lr = 0.05
[scaling]
num_workers = 2
[storage]
experiment = "killed"
"""
HETROM_RUN = """job = "hetrom"
seed = 1
tasks_per_batch = 8
rule = "dual"
m = 2
k = 7
warmup_steps = 5
inner_steps = 3
embedding_dim = 8
steps = 600
test_tasks = 20
test_batch = 10
report_every = 20
checkpoint_every = 20
[data]
ways = 3
queries = 4
[model]
hidden = [16]
[scaling]
num_workers = 2
[storage]
experiment = "killed"
"""


def _driver_pid(marker: str) -> int | None:
    """PID of the job's driver: the python process whose command line holds marker."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(marker.encode() in part for part in cmd) and b"python" in cmd[0]:
            return int(proc.name)
    return None


def _registered(run_dir: Path) -> bool:
    """Whether Ray Train's controller has registered a checkpoint of this run."""
    import json

    try:
        snapshot = json.loads((run_dir / RAY_CHECKPOINT_SNAPSHOT).read_text())
    except (OSError, ValueError):
        return False
    return snapshot.get("latest_checkpoint_result") is not None


def _rows(store: ResultStore, table: str, run_id: str):
    if table not in store.tables():
        return None
    return store.to_pandas(table, filters=[("run_id", "=", run_id)])


def _comparable(store: ResultStore, run_id: str) -> dict[str, list]:
    metrics = _rows(store, "metrics", run_id)
    metrics = metrics[~metrics["name"].isin(VOLATILE)]
    metrics = metrics[~metrics["name"].str.startswith("summary/")]
    out = {
        "metrics": sorted(
            zip(metrics["step"], metrics["name"], metrics["value"].round(9))
        )
    }
    for table, cols in (
        ("task_stats", ["step", "task_id", "loss", "selected", "dropped"]),
        ("data_weights", ["example_id", "weight", "step"]),
    ):
        rows = _rows(store, table, run_id)
        if rows is not None and len(rows):
            rows = rows[cols].round(9)
            out[table] = sorted(map(tuple, rows.itertuples(index=False)))
    return out


@pytest.mark.parametrize(
    ("script", "text"),
    [("jobs/train_sama.py", SAMA_RUN), ("jobs/train_hetrom.py", HETROM_RUN)],
    ids=["sama", "hetrom"],
)
def test_a_killed_driver_resumes_with_exactly_the_rows_of_an_uninterrupted_run(
    head, tmp_path, script, text
):
    import signal

    config = tmp_path / f"killed-{Path(script).stem}.toml"
    config.write_text(text)
    store = ResultStore(tmp_path / "store")
    args = [*job_args(config, tmp_path), "--run-name"]
    job = submit(head, script, *args, "victim", wait=False)
    deadline = time.monotonic() + 600
    while True:  # wait for a registered checkpoint and its rows, then kill the driver
        rows = _rows(store, "metrics", "victim")
        if _registered(tmp_path / "runs" / "victim") and rows is not None and len(rows):
            break
        assert time.monotonic() < deadline, "no checkpoint rows appeared"
        time.sleep(0.2)
    pid = _driver_pid(str(config))
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while (
        "RUNNING"
        in head.ray("job", "status", "--address", head.dashboard_url, job).stdout
    ):
        time.sleep(0.5)
    partial = _rows(store, "metrics", "victim")
    assert not partial["name"].str.startswith("summary/").any(), "finished before kill"

    submit(head, script, *args, "victim")  # resume
    submit(head, script, *args, "reference")  # uninterrupted, same config
    resumed = _rows(store, "metrics", "victim")
    assert (resumed["attempt"] > 1).any(), "the rerun started over instead of resuming"
    got, want = _comparable(store, "victim"), _comparable(store, "reference")
    assert set(got) == set(want) and len(want["metrics"]) > 0
    for table in want:
        assert got[table] == want[table], table


def test_a_submitted_job_trains_the_users_own_model_and_data_by_import_path(
    head, tmp_path
):
    # --working-dir ships the checkout; the config names the user's code by import path
    config = tmp_path / "byo.toml"
    config.write_text(
        'job = "sama"\nsteps = 40\nbatch_size = 32\nmeta_batch_size = 16\n'
        "eval_every = 20\nreport_every = 20\ncheckpoint_every = 20\n"
        '[data]\ndataset = "tests.unit.training.byo_fixtures:digits_splits"\n'
        '[model]\nfactory = "tests.unit.training.byo_fixtures:user_cnn"\n'
        "kwargs = { width = 4 }\n"
        '[optim]\nname = "sgd"\nlr = 0.05\nmomentum = 0.9\ndampening = 0.1\n'
        '[scaling]\nnum_workers = 2\n[storage]\nexperiment = "byo"\n'
    )
    submit(head, "jobs/train_sama.py", *job_args(config, tmp_path))
    weights = ResultStore(tmp_path / "store").to_pandas("data_weights")
    assert len(weights) == 1797 - 250 and weights["example_id"].is_unique
