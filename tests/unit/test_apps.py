"""Apps (hpcnb.apps): the recipes a config declares, checked when it loads (one line naming the
file and key), and what reaches the job script: the recipe, never a secret."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from hpcnb.apps import BUILT_IN
from hpcnb.config import load_cluster
from hpcnb.errors import ConfigError, UsageError
from hpcnb.handshake import parse_handshake
from hpcnb.render import render_script
from hpcnb.request import build_request


@pytest.fixture
def user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HPCNB_CLUSTER", raising=False)

    def write(text: str) -> Path:
        path = tmp_path / "config.toml"
        path.write_text('[clusters.c]\nscheduler = "local"\n' + text)
        monkeypatch.setenv("HPCNB_CONFIG", str(path))
        return path

    return write


def app_recipe(script: str) -> dict:
    [line] = [line for line in script.splitlines() if line.startswith("export HPCNB_APP=")]
    return json.loads(shlex.split(line.split("=", 1)[1])[0])


def test_every_cluster_knows_the_shipped_apps(user_config) -> None:
    user_config("")
    cfg = load_cluster("c")
    assert {a.name for a in cfg.apps} == {"jupyter", "code-server", "rstudio"}
    assert cfg.app == "jupyter"
    assert app_recipe(render_script(cfg, build_request(cfg), "slurm")) == {"name": "jupyter"}


def test_code_server_recipe_reaches_the_script_and_no_secret_does(user_config) -> None:
    user_config("")
    cfg = load_cluster("c")
    script = render_script(cfg, build_request(cfg, app="code-server"), "slurm")
    recipe = app_recipe(script)
    assert recipe["command"][:3] == ["code-server", "--bind-addr", "{host}:{port}"]
    assert recipe["secret_env"] == "PASSWORD" and recipe["login"] == "password"
    assert "PASSWORD=" not in script and "--password" not in script


def test_a_users_setup_for_rstudio_adds_to_the_recipes_own_lines(user_config) -> None:
    user_config('[clusters.c.apps.rstudio]\nsetup = ["module load rstudio-server/2024.04"]\n')
    cfg = load_cluster("c")
    script = render_script(cfg, build_request(cfg, app="rstudio"), "slurm")
    load = script.index("module load rstudio-server/2024.04")
    helper = script.index("read -rs p")  # the recipe's PAM helper (BUILT_IN["rstudio"].prepare)
    assert load < helper
    assert "prepare" not in app_recipe(script) and "setup" not in app_recipe(script)


def test_a_users_recipe_and_a_changed_builtin(user_config) -> None:
    user_config("""app = "board"
[clusters.c.apps.board]
command = ["tensorboard", "--host", "{host}", "--port", "{port}", "--logdir", "{dir}/runs"]
secret_env = "BOARD_SECRET"
login = "password"
setup = ["module load tensorflow"]
[clusters.c.apps.code-server]
setup = ["module load code-server/4.100"]
""")
    cfg = load_cluster("c")
    request = build_request(cfg)
    assert request.app == "board"
    script = render_script(cfg, request, "slurm")
    assert app_recipe(script)["command"][0] == "tensorboard"
    assert "eval 'module load tensorflow'" in script
    code = render_script(cfg, build_request(cfg, app="code-server"), "slurm")
    assert "eval 'module load code-server/4.100'" in code  # the built-in, changed key by key
    assert app_recipe(code)["ready"] == "/healthz"


@pytest.mark.parametrize(("text", "expected"), [
    ('[clusters.c.apps.x]\ncolour = "red"', "apps.x: unknown key 'colour'"),
    ('[clusters.c.apps.x]\ncommand = ["srv", "{token}"]\nsecret_env = "S"', "not {token}"),
    ('[clusters.c.apps.x]\ncommand = ["srv", "{port}"]', "apps.x needs secret_env"),
    ('[clusters.c.apps.x]\ncommand = ["srv"]\nsecret_env = "S"', "must say where to listen"),
    ('[clusters.c.apps.x]\ncommand = ["--srv", "{port}"]\nsecret_env = "S"', "a command, not an option"),
    ('[clusters.c.apps.x]\ncommand = ["srv", "{port}"]\nsecret_env = "a b"', "environment variable"),
    ('[clusters.c.apps.x]\ncommand = ["srv\\nrm", "{port}"]\nsecret_env = "S"', "control characters"),
    ('[clusters.c.apps.x]\nurl_path = "http://evil/"', "url_path must be a path"),
    ('[clusters.c.apps.x]\nlogin = "none"', 'login must be "token" or "password"'),
    ('[clusters.c.apps.jupyter]\ncommand = ["j", "{port}"]\nsecret_env = "S"', "hpcnb's own start"),
    ('app = "nope"', "app = 'nope' is not an app of this cluster"),
    ('tunnel = "socket"\napp = "rstudio"', "cannot listen on a unix socket"),
])
def test_a_bad_recipe_is_one_line_naming_the_key(user_config, text: str, expected: str) -> None:
    path = user_config(text)
    with pytest.raises(ConfigError) as info:
        load_cluster("c")
    assert expected in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_app_flag_is_checked_before_anything_runs(user_config) -> None:
    user_config('tunnel = "socket"')
    cfg = load_cluster("c")
    with pytest.raises(UsageError, match="--app 'vim' is not an app of this cluster"):
        build_request(cfg, app="vim")
    with pytest.raises(UsageError, match="rstudio' cannot listen on a unix socket"):
        build_request(cfg, app="rstudio")
    assert build_request(cfg, app="code-server").app == "code-server"  # it has a socket_command


def test_builtin_recipes_are_valid_recipes() -> None:
    for app in BUILT_IN.values():
        assert app.secret_env and app.ready.startswith("/") and app.url_path.startswith("/")
        assert app.is_jupyter or any("{port}" in w for w in app.command)


def test_the_url_carries_a_token_but_never_a_password() -> None:
    jupyter = parse_handshake(b'{"token": "t0k", "host": "n", "port": 1}', "1")  # an older job's file
    assert jupyter.url(8888) == "http://127.0.0.1:8888/lab?token=t0k" and jupyter.password is None
    app = parse_handshake(json.dumps({
        "token": "s3cret", "host": "n", "port": 1, "app": "code-server", "login": "password",
        "ready": "/healthz", "url_path": "/"}).encode(), "1")
    assert app.url(9000) == "http://127.0.0.1:9000/" and app.password == "s3cret"
    odd = parse_handshake(b'{"token": "t", "url_path": "//evil.example/x y", "ready": "http://x"}', "1")
    assert (odd.url_path, odd.ready) == ("/lab", "/api/status")
