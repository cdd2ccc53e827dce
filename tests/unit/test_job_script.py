"""What the job script does on the node before Jupyter starts, run for real with bash and a stub
"python" that records what it was given: the session folder per machine, the user's umask handed
on, a failing setup line stopping the job with its number, a home it cannot write naming itself.
And the launcher's choices (tested on its class): Notebook 6's option names, the umask."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from hpcnb import paths
from hpcnb.config import load_cluster
from hpcnb.render import render_script
from hpcnb.request import build_request

STUB = """#!/bin/sh
umask > "$HPCNB_SESSION_DIR/stub.umask"
env > "$HPCNB_SESSION_DIR/stub.env"
"""


def run_job(tmp_path: Path, *, setup: tuple[str, ...] = (), home: Path | None = None,
            umask: int = 0o022, name: str = "local") -> tuple[subprocess.CompletedProcess[str], Path]:
    stub = tmp_path / "python3"
    stub.write_text(STUB)
    stub.chmod(0o755)
    cfg = dataclasses.replace(load_cluster("local"), name=name, python=str(stub), setup=setup)
    script = tmp_path / "job.sh"
    script.write_text(render_script(cfg, build_request(cfg), "local"))
    home = home or tmp_path / "home"
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "HPCNB_JOB_ID": "77"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30,
                          preexec_fn=lambda: os.umask(umask))
    return proc, home / ".hpcnb" / "sessions" / name / "77"


def test_session_folder_is_per_machine_and_umask_is_handed_on(tmp_path: Path) -> None:
    proc, folder = run_job(tmp_path, umask=0o002, name="site-a")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (folder / "stub.umask").read_text().strip() == "0077"  # hpcnb's own files: private
    env = dict(line.split("=", 1) for line in (folder / "stub.env").read_text().splitlines() if "=" in line)
    assert env["HPCNB_UMASK"] == "0002"  # ... and Jupyter gets the user's back (the launcher)
    assert env["HPCNB_SESSION_DIR"] == str(folder)
    assert oct((folder.parent).stat().st_mode & 0o777) == "0o700"


def test_a_failing_setup_line_stops_the_job_and_says_which(tmp_path: Path) -> None:
    proc, folder = run_job(tmp_path, setup=("export A=1", "false", "export B=2"))
    assert proc.returncode == 3
    ended = json.loads((folder / "ended").read_text())
    assert ended["reason"] == "setup line 2 exited 1" and ended["exit_code"] == 3
    assert "hpcnb: setup line 2 exited 1, stopping: false" in (folder / "job.log").read_text()
    assert not (folder / "stub.env").exists()  # Jupyter never started


def test_a_home_it_cannot_write_is_exit_70_with_a_message(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc, _ = run_job(tmp_path, home=blocker / "home")  # mkdir fails even for root
    assert proc.returncode == 70
    assert "hpcnb: cannot create" in proc.stderr and "home full or read-only" in proc.stderr


def test_two_clusters_extending_one_site_share_the_machine_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[clusters.a]\nextends = "gadi"\n[clusters.b]\nextends = "gadi"\n'
                      '[clusters.c]\nscheduler = "slurm"\nlogin_host = "h"\n')
    monkeypatch.setenv("HPCNB_CONFIG", str(config))
    assert load_cluster("a").machine == load_cluster("b").machine == "gadi"
    assert load_cluster("c").machine == "c"


# ---- the launcher's own choices -------------------------------------------------------------


def launcher_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hpcnb_launcher", paths.template_dir() / "launcher.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("jupyter", "version", "app"), [
    ("notebook", "6.5.4", "NotebookApp"), ("notebook", "7.2.0", "ServerApp"), ("lab", "6.5.4", "ServerApp"),
])
def test_classic_notebook_6_gets_its_own_option_names(monkeypatch: pytest.MonkeyPatch, jupyter: str,
                                                      version: str, app: str) -> None:
    monkeypatch.setitem(sys.modules, "notebook", ModuleType("notebook"))
    sys.modules["notebook"].__version__ = version  # type: ignore[attr-defined]
    env = {"HPCNB_SESSION_DIR": "/s", "HPCNB_JOB_ID": "1", "HPCNB_JUPYTER": jupyter,
           "HPCNB_NOTEBOOK_DIR": "/data", "HPCNB_UMASK": "0027"}
    launcher = launcher_module().Launcher(env)
    argv = launcher.argv("10.0.0.1", 8888, "")
    assert f"--{app}.ip=10.0.0.1" in argv and f"--{app}.port=8888" in argv
    assert f"--{app}.{'notebook_dir' if app == 'NotebookApp' else 'root_dir'}=/data" in argv
    assert launcher.user_umask == 0o027
