"""The numerical cores never import Ray (ARCHITECTURE.md: data flows one way)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "raymeta"
CORES = ("gp", "metalearn", "tasks")
ADAPTERS = ("search", "training", "results")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def core_files() -> list[Path]:
    return sorted(p for core in CORES for p in (PACKAGE / core).rglob("*.py"))


@pytest.mark.parametrize(
    "path", core_files(), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_core_does_not_import_ray_or_adapters(path: Path) -> None:
    bad = {
        name
        for name in imported_modules(path)
        if name == "ray"
        or name.startswith("ray.")
        or any(name.startswith(f"raymeta.{a}") for a in ADAPTERS)
    }
    assert not bad, (
        f"{path} imports {sorted(bad)}; the numerical cores must stay Ray-free"
    )


def test_guard_detects_a_ray_import(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import numpy\nfrom ray import tune\n")
    assert "ray" in imported_modules(sample)


def test_results_package_does_not_import_algorithms() -> None:
    for path in (PACKAGE / "results").rglob("*.py"):
        bad = {
            n
            for n in imported_modules(path)
            if n.startswith(("raymeta.gp", "raymeta.metalearn"))
        }
        assert not bad, f"{path} imports {sorted(bad)}"


def test_importing_the_cores_does_not_load_ray() -> None:
    import subprocess
    import sys

    cores = "raymeta.gp, raymeta.metalearn, raymeta.tasks"
    code = f"import sys, {cores}; print('ray' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "path",
    sorted((PACKAGE / "training").glob("*.py")),
    ids=lambda p: p.name,
)
def test_training_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= 400, f"{path.name} has {lines} lines; split it (issue 13: <= ~400)"


def test_no_test_imports_a_private_name_from_training() -> None:
    tests = Path(__file__).resolve().parent
    found = []
    for path in tests.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            module = getattr(node, "module", None) or ""
            if isinstance(node, ast.ImportFrom) and module.startswith(
                "raymeta.training"
            ):
                found += [
                    f"{path.name}: {module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
    assert not found, found
