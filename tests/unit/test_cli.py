from __future__ import annotations

import pytest

from raymeta.cli import main
from raymeta.results import ResultStore


@pytest.fixture
def root(tmp_path):
    store = ResultStore(tmp_path / "store")
    rows = [
        {
            "experiment": e,
            "method": m,
            "step": s,
            "name": "loss",
            "value": 1.0 / (s + 1 + k),
        }
        for e in ("a", "b")
        for m in ("x", "y")
        for s in range(5)
        for k in range(3)
    ]
    store.append("metrics", rows)
    return store.root


def test_ls_lists_tables_and_experiments(root, capsys):
    assert main(["results", "ls", root]) == 0
    out = capsys.readouterr().out
    assert "metrics" in out and "rows=60" in out and "['a', 'b']" in out


def test_show_filters(root, capsys):
    assert (
        main(
            [
                "results",
                "show",
                root,
                "metrics",
                "--experiment",
                "b",
                "--where",
                "step=4",
                "--columns",
                "experiment,method,step,value",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "[6 rows]" in out


def test_plot_writes_png(root, tmp_path, capsys):
    out = tmp_path / "p.png"
    assert (
        main(
            [
                "results",
                "plot",
                root,
                "metrics",
                "--by",
                "method",
                "--logy",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.stat().st_size > 1000


def test_gc_runs(root, capsys):
    assert main(["results", "gc", root]) == 0
    assert "removed 0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["results", "ls", "/nonexistent/raymeta"], "no results store at"),
        (["results", "show", "{root}", "metrix"], "unknown table 'metrix'"),
        (["results", "show", "{root}", "metrics", "--where", "step"], "COLUMN=VALUE"),
        (
            ["results", "plot", "{root}", "metrics", "--y", "nope"],
            "column(s) ['nope'] not found",
        ),
        (["results", "show", "{root}", "metrics", "--experiment", "zzz"], None),
    ],
)
def test_bad_input_exits_2_with_one_line(root, capsys, argv, message):
    argv = [a.format(root=root) for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    if message is None:
        assert code == 0
        return
    assert code == 2
    assert err.startswith("raymeta: error:") and message in err and err.count("\n") == 1


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["results", "--help"])
    assert exc.value.code == 0
    assert "ls" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "nosuchcol=1"], "has no column 'nosuchcol'; its columns are"),
        (["--where", "value=abc"], "column 'value' holds double values; 'abc'"),
        (["--where", "step=1.5"], "column 'step' holds int64 values"),
        (["--limit", "-1"], "--limit must be >= 0"),
        (["--columns", "value,nope"], "has no column(s) ['nope']"),
    ],
)
def test_show_rejects_bad_filters_in_one_line(root, capsys, args, message):
    assert main(["results", "show", root, "metrics", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raymeta: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_show_limit_zero_prints_every_row(root, capsys):
    assert main(["results", "show", root, "metrics", "--limit", "0"]) == 0
    out = capsys.readouterr().out
    assert "[60 rows]" in out and len(out.strip().splitlines()) == 62


def test_run_with_an_escaping_run_name_writes_nothing(tmp_path, capsys):
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "sama_tiny.toml"
    runs = tmp_path / "runs"
    for bad in ("../escaped", str(tmp_path / "absolute")):
        code = main(
            ["run", str(config), "--storage-path", str(runs), "--run-name", bad]
        )
        assert code == 2
        assert "run name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_validate_reports_a_non_utf8_file_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_bytes(b'job = "sama"\nx = "\xff"\n')
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8" in err and "offset 18" in err and "Traceback" not in err
