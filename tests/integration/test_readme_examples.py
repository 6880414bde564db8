"""The README's library examples run as written (with paths redirected to tmp)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SECTION = README.split("### 3. As a library", 1)[1].split("\n### 4.", 1)[0]
EXAMPLES = re.findall(r"```python\n(.+?)```", SECTION, re.S)
BYO = README.split("### 4. Your own model", 1)[1].split("\n## ", 1)[0]
BYO_EXAMPLES = re.findall(r"```python\n(.+?)```", BYO, re.S)


def test_library_section_has_tune_and_train_examples():
    assert len(EXAMPLES) == 2
    assert "ScaMLGPSearch" in EXAMPLES[0] and "TorchTrainer" in EXAMPLES[1]


@pytest.mark.parametrize("index", [0, 1], ids=["tune", "train"])
def test_readme_example_runs(ray_local, tmp_path, index, capsys):
    _run(EXAMPLES[index], tmp_path, f"README example {index}")
    if index == 0:
        from raymeta.results import ResultStore

        trials = ResultStore(tmp_path / "store").to_pandas("trials")
        assert len(trials) == 5 and set(trials["experiment"]) == {"my-run"}


def _run(code: str, tmp_path: Path, name: str) -> None:
    code = re.sub(
        r"^STORE, STORAGE = .*$",
        f'STORE, STORAGE = "{tmp_path}/store", "{tmp_path}/runs"',
        code,
        flags=re.M,
    )
    code = re.sub(r"^STORAGE = .*$", f'STORAGE = "{tmp_path}/runs"', code, flags=re.M)
    exec(compile(code, name, "exec"), {"__name__": "__readme__"})


def test_byo_section_has_a_sama_and_a_hetrom_example():
    assert len(BYO_EXAMPLES) == 2
    assert '"job": "sama"' in BYO_EXAMPLES[0] and '"job": "hetrom"' in BYO_EXAMPLES[1]


def test_readme_sama_example_trains_a_users_cnn_on_a_users_ray_dataset(
    ray_local, tmp_path
):
    from raymeta.results import ResultStore

    _run(BYO_EXAMPLES[0], tmp_path, "README SAMA example")
    store = ResultStore(tmp_path / "store")
    weights = store.to_pandas("data_weights", filters=[("run_id", "=", "my-cnn-1")])
    # one weight per training example, gathered from both workers' shards
    assert sorted(weights["example_id"]) == list(range(300, 1797))
    metrics = store.to_pandas("metrics", filters=[("run_id", "=", "my-cnn-1")])
    acc = metrics[metrics["name"] == "summary/test_acc"]["value"]
    assert len(acc) == 1 and float(acc.iloc[0]) > 0.5  # chance is 0.1


def test_readme_hetrom_example_meta_trains_on_a_users_labelled_data(
    ray_local, tmp_path
):
    from raymeta.results import ResultStore

    _run(BYO_EXAMPLES[1], tmp_path, "README HeTRoM example")
    store = ResultStore(tmp_path / "store")
    stats = store.to_pandas("task_stats", filters=[("run_id", "=", "my-fewshot-1")])
    assert len(stats) == 60 * 10 and not stats.duplicated(["step", "task_id"]).any()
    metrics = store.to_pandas("metrics", filters=[("run_id", "=", "my-fewshot-1")])
    acc = metrics[metrics["name"] == "summary/test_metric"]["value"]
    assert len(acc) == 1 and float(acc.iloc[0]) > 1 / 3  # chance for 3-way
