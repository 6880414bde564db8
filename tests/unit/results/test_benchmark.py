from __future__ import annotations

from raymeta.results import ResultStore
from raymeta.results.benchmark import record_benchmark


def test_figures_are_stamped_with_benchmark_machine_and_command(tmp_path):
    store = ResultStore(tmp_path / "store")
    rows = [{"metric": "latency_s", "value": 0.5, "method": "scamlgp", "step": 128}]
    assert record_benchmark(store, "scaling", rows) == 1
    df = store.to_pandas("benchmarks")
    assert df.experiment.tolist() == ["scaling"] and df.benchmark.tolist() == [
        "scaling"
    ]
    assert df.value.tolist() == [0.5] and df.step.tolist() == [128]
    assert df.machine.iloc[0] and df.command.iloc[0]


def test_no_figures_append_nothing(tmp_path):
    store = ResultStore(tmp_path / "store")
    assert record_benchmark(store, "scaling", []) == 0
    assert "benchmarks" not in store.tables()
