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
