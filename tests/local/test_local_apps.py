"""An app other than Jupyter, end to end on the local backend: a recipe from the user's config
(Python's own http.server as the app), its password made by the launcher and passed in the app's
environment only, the URL without it, and attach / list / cancel as for a notebook."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from hpcnb_driver import Hpcnb, argvs

CONFIG = """\
[clusters.here]
extends = "local"
[clusters.here.apps.files]
command = ["{python}", "-m", "http.server", "--bind", "{{host}}", "{{port}}", "--directory", "{{dir}}"]
secret_env = "FILES_PASSWORD"
login = "password"
ready = "/"
description = "the session folder's files"
"""


def environ_of(needle: bytes) -> bytes:
    [pid] = [pid for pid, argv in argvs().items() if needle in argv and b"http.server" in argv]
    return Path(f"/proc/{pid}/environ").read_bytes()


def test_an_app_from_the_config_runs_with_its_password_in_no_argv(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    (home / "work" / "hello.txt").write_text("hello from the node\n")
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(python=sys.executable))
    hpcnb = Hpcnb(tmp_path / "state", config=config, home=home)
    job_id = hpcnb.submit("here", "--app", "files", "--notebook-dir", str(home / "work"), "--hours", "0.25")
    try:
        with hpcnb.attach(job_id, "here") as attached:
            assert "token=" not in attached.url
            password = attached.password()
            with urllib.request.urlopen(attached.base + "/hello.txt", timeout=30) as response:
                assert response.read() == b"hello from the node\n"
            assert [pid for pid, argv in argvs().items() if password.encode() in argv] == []
            assert f"FILES_PASSWORD={password}".encode() in environ_of(str(home / "work").encode())
        [session] = hpcnb.list_json("here")
        assert (session["job_id"], session["state"]) == (job_id, "running")
    finally:
        cancelled = hpcnb.run("cancel", job_id, "--cluster", "here")
    assert cancelled.returncode == 0, cancelled.stderr
    assert hpcnb.list_json("here") == []


def test_an_unknown_app_is_refused_before_anything_is_submitted(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(python=sys.executable))
    hpcnb = Hpcnb(tmp_path / "state", config=config, home=tmp_path)
    proc = hpcnb.run("submit", "--cluster", "here", "--app", "emacs", "--no-browser")
    assert proc.returncode == 2
    known = "code-server, files, jupyter, rstudio"
    assert proc.stderr.strip().splitlines() == [
        f"hpcnb: error: --app 'emacs' is not an app of this cluster (known: {known})"]
    assert hpcnb.list_json("here", "--all") == []


def test_an_app_that_is_not_installed_ends_the_job_in_one_named_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(python=sys.executable) + """[clusters.here.apps.missing]
command = ["hpcnb-no-such-server", "--port", "{port}"]
secret_env = "S"
""")
    hpcnb = Hpcnb(tmp_path / "state", config=config, home=tmp_path)
    proc = hpcnb.run("submit", "--cluster", "here", "--app", "missing", "--no-browser", "--no-attach")
    assert proc.returncode == 9, proc.stderr
    assert "cannot start missing: hpcnb-no-such-server: No such file or directory" in proc.stderr
    assert "Traceback" not in proc.stderr
