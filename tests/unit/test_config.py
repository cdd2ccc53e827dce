"""Config loading and validation: unknown keys, wrong types, missing files, TOML errors, extends."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcnb import paths
from hpcnb.config import ClusterConfig, list_clusters, load_cluster
from hpcnb.errors import ConfigError

SITE_NAMES = {"local", "perlmutter", "stampede3", "derecho", "anvil", "euler", "gadi"}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HPCNB_CLUSTER", raising=False)
    monkeypatch.delenv("HPCNB_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def write_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    monkeypatch.setenv("HPCNB_CONFIG", str(cfg))
    return cfg


def test_shipped_site_configs_load() -> None:
    names = {c.name for c in list_clusters()}
    assert names >= SITE_NAMES
    for c in list_clusters():
        assert isinstance(c, ClusterConfig)
        assert c.scheduler in ("slurm", "pbs", "local")
        if c.scheduler != "local":
            assert c.login_host and c.docs and c.docs.startswith("https://")


def test_site_configs_cite_their_docs() -> None:
    for f in paths.site_config_dir().glob("*.toml"):
        if f.stem != "local":
            comments = [line for line in f.read_text().splitlines() if line.startswith("#")]
            assert any("https://" in line for line in comments[:5]), f


def test_default_is_local_without_config() -> None:
    c = load_cluster(None)
    assert c.name == "local" and c.scheduler == "local" and c.partition_flag is None


def test_env_cluster_then_default_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_user(monkeypatch, tmp_path, 'default_cluster = "euler"\n')
    assert load_cluster(None).name == "euler"
    monkeypatch.setenv("HPCNB_CLUSTER", "gadi")
    assert load_cluster(None).name == "gadi"
    assert load_cluster("anvil").name == "anvil"


def test_extends_overrides_and_keeps_base(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = write_user(
        monkeypatch,
        tmp_path,
        '[clusters.pm]\nextends = "perlmutter"\nuser = "alice"\naccount = "m1234"\n'
        'identity_file = "keys/id_ed25519"\nknown_hosts = "~/kh"\n',
    )
    c = load_cluster("pm")
    assert (c.user, c.account, c.extends) == ("alice", "m1234", "perlmutter")
    assert c.login_host == "perlmutter.nersc.gov" and c.partition_flag == "--qos"
    assert c.identity_file == str((cfg.parent / "keys/id_ed25519").resolve())
    assert c.known_hosts == str(Path("~/kh").expanduser())
    assert c.source == str(cfg)


def test_same_name_table_refines_site(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_user(monkeypatch, tmp_path, '[clusters.gadi]\nuser = "bob"\n')
    c = load_cluster("gadi")
    assert c.user == "bob" and c.account_flag == "-P" and c.extends == "gadi"


def test_user_defined_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_user(
        monkeypatch,
        tmp_path,
        '[clusters.mine]\nscheduler = "pbs"\nlogin_host = "login.example.org"\nport = 2222\n'
        'setup = ["module load python/3.11", "source ~/venv/bin/activate"]\n',
    )
    c = load_cluster("mine")
    assert (c.scheduler, c.port, c.partition_flag, c.account_flag) == ("pbs", 2222, "-q", "-A")
    assert c.setup == ("module load python/3.11", "source ~/venv/bin/activate")
    assert "mine" in {x.name for x in list_clusters()}


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\nprot = 22\n', ["'prot'", "'port'"]),
        ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\nport = "22"\n', ["'port'", "integer"]),
        ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\nport = true\n', ["'port'", "integer"]),
        ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\nsetup = "ls"\n', ["list of strings"]),
        ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\nmax_hours = nan\n', ["number"]),
        ('[clusters.x]\nscheduler = "htcondor"\nlogin_host = "h"\n', ["scheduler", "'htcondor'"]),
        ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\ntunnel = "vpn"\n', ["tunnel"]),
        ('[clusters.x]\nscheduler = "slurm"\n', ["needs login_host"]),
        ('[clusters.x]\nlogin_host = "h"\n', ["needs scheduler"]),
        ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h; rm -rf ~"\n', ["login_host"]),
        ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\npartition = "a b"\n', ["partition"]),
        ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\nsetup = ["a\\nb"]\n', ["one line"]),
        (
            '[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\nextra_directives = ["-C $(id)"]\n',
            ["extra_directives"],
        ),
        ('[clusters.x]\nscheduler = "pbs"\nlogin_host = "h"\naccount_flag = "-Z"\n', ["account_flag"]),
        *[
            (
                f'[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\nextra_directives = ["{d}"]\n',
                ["extra_directives", "plain option"],
            )
            for d in (
                "--constraint=gpu; id",
                "--constraint=gpu\\n#SBATCH -A x",
                "-C a b",
                "constraint=gpu",
                "--comment='x'",
                "---x",
                "-",
                "--",
                "-C  a",
                "--c=`id`",
                "-C gpu&hbm80g",
            )
        ],
        ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\npython = "-c"\n', ["python", "'-'"]),
        ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\npython = ""\n', ["python"]),
        ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\npython = "a\\nb"\n', ["python", "one line"]),
        ('[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\nnotebook_dir = "a\\nb"\n', ["notebook_dir"]),
        ('[clusters.x]\nextends = "nosuch"\n', ["nosuch", "not a shipped site config"]),
        ("defaults = 1\n", ["top-level key 'defaults'", "default_cluster"]),
        ("clusters = 3\n", ["[clusters.NAME]"]),
    ],
)
def test_invalid_user_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: str, expect: list[str]
) -> None:
    cfg = write_user(monkeypatch, tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_cluster("x")
    message = str(info.value)
    assert str(cfg) in message
    for fragment in expect:
        assert fragment in message, message
    assert "\n" not in message


def test_missing_file_named_by_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv("HPCNB_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="HPCNB_CONFIG") as info:
        load_cluster(None)
    assert str(missing) in str(info.value)


def test_toml_syntax_error_names_file_and_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = write_user(monkeypatch, tmp_path, '[clusters.x]\nscheduler = "slurm"\nuser = \n')
    with pytest.raises(ConfigError) as info:
        load_cluster("x")
    assert str(cfg) in str(info.value) and "line 3" in str(info.value)


def test_unknown_cluster_lists_known(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_cluster("perlmuter")
    assert "perlmutter" in str(info.value)
    write_user(monkeypatch, tmp_path, 'default_cluster = "zzz"\n')
    with pytest.raises(ConfigError, match="'zzz'"):
        load_cluster(None)


def test_xdg_config_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert paths.user_config_file() == tmp_path / "hpcnb" / "config.toml"
    monkeypatch.setenv("HPCNB_STATE_DIR", str(tmp_path / "st"))
    assert paths.state_dir() == tmp_path / "st"
    monkeypatch.delenv("HPCNB_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xs"))
    assert paths.state_dir() == tmp_path / "xs" / "hpcnb"


def test_data_dirs_exist() -> None:
    assert (paths.template_dir() / "slurm.sh.j2").is_file()
    assert (paths.site_config_dir() / "local.toml").is_file()


def test_import_is_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys, hpcnb.config, hpcnb.request, hpcnb.paths;"
        "print([m for m in ('jinja2', 'paramiko') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "directive", ["--constraint=gpu", "-C cpu", "-l select=1:ncpus=4", "-l storage=gdata/ab12+scratch/ab12",
                  "--exclusive", "-V", "--mail-type=END,FAIL", "--output=/scratch/%u/%j.out"],
)  # fmt: skip
def test_plain_directives_are_accepted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, directive: str
) -> None:
    write_user(monkeypatch, tmp_path, f'[clusters.x]\nscheduler = "slurm"\nlogin_host = "h"\n'
               f'extra_directives = ["{directive}"]\n')  # fmt: skip
    assert load_cluster("x").extra_directives == (directive,)
