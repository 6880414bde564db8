"""The README's library examples run as written (with paths redirected to tmp)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SECTION = README.split("### 3. As a library", 1)[1].split("\n## ", 1)[0]
EXAMPLES = re.findall(r"```python\n(.+?)```", SECTION, re.S)


def test_library_section_has_tune_and_train_examples():
    assert len(EXAMPLES) == 2
    assert "ScaMLGPSearch" in EXAMPLES[0] and "TorchTrainer" in EXAMPLES[1]


@pytest.mark.parametrize("index", [0, 1], ids=["tune", "train"])
def test_readme_example_runs(ray_local, tmp_path, index, capsys):
    code = EXAMPLES[index]
    code = re.sub(
        r"^STORE, STORAGE = .*$",
        f'STORE, STORAGE = "{tmp_path}/store", "{tmp_path}/runs"',
        code,
        flags=re.M,
    )
    code = re.sub(r"^STORAGE = .*$", f'STORAGE = "{tmp_path}/runs"', code, flags=re.M)
    exec(compile(code, f"README example {index}", "exec"), {"__name__": "__readme__"})
    if index == 0:
        from raymeta.results import ResultStore

        trials = ResultStore(tmp_path / "store").to_pandas("trials")
        assert len(trials) == 5 and set(trials["experiment"]) == {"my-run"}
