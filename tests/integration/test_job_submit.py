"""`ray job submit` end to end: a real head, token auth, results in the store."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from raymeta.results import ResultStore
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


def test_resubmitting_an_interrupted_tuning_job_resumes_it(head, tmp_path):
    text = (ROOT / "jobs/configs/tune_scamlgp_tiny.toml").read_text()
    config = tmp_path / "tune.toml"
    config.write_text(
        re.sub(r"num_samples = \d+", "num_samples = 12", text).replace(
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
    assert interrupted < 12

    job_id = submit(head, "jobs/tune_scamlgp.py", *job_args(config, tmp_path))
    logs = head.ray("job", "logs", "--address", head.dashboard_url, job_id).stdout
    assert "resume-me: 12 trials" in logs, logs[-3000:]
    trials = store.to_pandas("trials", filters=[("experiment", "=", "resume-me")])
    # Restored, not restarted: a fresh run would add 12 rows to the interrupted ones.
    # Only trials in flight at the stop (max_concurrent = 2) may have run twice.
    assert 12 <= len(trials) <= 12 + 2, (interrupted, trials[["trial_id", "status"]])
    assert trials["trial_id"].is_unique
