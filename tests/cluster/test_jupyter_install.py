"""`hpcnb jupyter install` on a testbed cluster whose nodes have no Jupyter: doctor says so and
names the command; the command builds the env on the cluster (from the testbed's local wheels:
its hosts reach no package index), records it in the config, and a real notebook then starts
from it and computes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fixtures import ssh
from hpcnb_driver import Hpcnb, derived_config

pytestmark = pytest.mark.cluster

CLUSTER = "testbed-nojupyter"
WHEELS = "/opt/hpcnb-testbed/wheels"


@pytest.fixture
def hpcnb(testbed: Path, tmp_path: Path) -> Hpcnb:
    # The testbed cluster with no setup line: the nodes' python3 is Debian's, without Jupyter.
    config = derived_config(tmp_path / "config.toml", testbed,
                            {CLUSTER: ("testbed", {"setup": None, "description": None})})
    return Hpcnb(tmp_path / "state", config=config)


def test_install_jupyter_where_there_is_none_then_a_notebook_runs(hpcnb: Hpcnb) -> None:
    before = hpcnb.run("doctor", "--cluster", CLUSTER)
    assert before.returncode == 6, before.stdout + before.stderr
    assert f"hpcnb jupyter install --cluster {CLUSTER}" in before.stdout

    env = f"$HOME/hpcnb-test-envs/{uuid.uuid4().hex[:8]}"
    try:
        proc = hpcnb.run("jupyter", "install", "--cluster", CLUSTER, "--path", env,
                         "--pip-option=--no-index", f"--pip-option=--find-links={WHEELS}", timeout=900)
        assert proc.returncode == 0, proc.stderr
        path = proc.stdout.strip()
        assert path.startswith("/home/hpcuser/hpcnb-test-envs/"), proc.stdout
        config = Path(hpcnb.env["HPCNB_CONFIG"]).read_text()
        assert f'setup = ["source {path}/bin/activate"]' in config
        assert "JupyterLab 4." in proc.stderr

        after = hpcnb.run("doctor", "--cluster", CLUSTER)
        assert after.returncode == 0, after.stdout + after.stderr

        job_id = hpcnb.submit(CLUSTER, "--hours", "0.5")
        try:
            with hpcnb.attach(job_id, CLUSTER) as attached:
                kernel = attached.start_kernel()
                assert attached.execute(kernel, "21 * 2") == "42"
        finally:
            hpcnb.run("cancel", job_id, "--cluster", CLUSTER)
    finally:
        ssh(f"rm -rf {env}")


def test_a_path_that_is_not_a_plain_path_is_refused(hpcnb: Hpcnb) -> None:
    proc = hpcnb.run("jupyter", "install", "--cluster", CLUSTER, "--path", "$(touch /tmp/x)")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--path" in proc.stderr
