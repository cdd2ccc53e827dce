"""README's Python API example, exactly as written there, run on the real testbed.

The code between `<!-- api-example -->` and `<!-- /api-example -->` is taken from README.md and run
in a fresh interpreter with the testbed's config; it submits a real job, reaches the notebook
through the tunnel it opens, and cancels it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- api-example -->\n```python\n(.*?)```\n<!-- /api-example -->", text, re.S)
    assert match, "README.md has no api-example block"
    return match.group(1)


def test_readme_python_api_example_runs_unchanged(testbed: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HPCNB_CONFIG": str(testbed), "HPCNB_STATE_DIR": str(tmp_path / "state")}
    env.pop("HPCNB_CLUSTER", None)
    proc = subprocess.run([sys.executable, "-c", readme_example()], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"200 http://127\.0\.0\.1:\d+/lab\?token=\S+", lines[0]), proc.stdout
    assert lines[1].startswith("hpcnb: job ") and " started on node0" in lines[1], proc.stdout
    assert lines[2] == "cancelled", proc.stdout
    assert "'cancelled')" in lines[3], proc.stdout
    assert proc.stderr == ""  # the API never prints
