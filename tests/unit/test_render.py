"""Rendered job scripts: valid bash for every site config and scheduler, safe directives, no token."""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from hpcnb import paths
from hpcnb.config import ClusterConfig, load_cluster
from hpcnb.errors import ConfigError, UsageError
from hpcnb.render import DELIMITER, render_script, shq
from hpcnb.request import build_request

DIRECTIVE = re.compile(r"^#(SBATCH|PBS) -[A-Za-z0-9 ._:=/@+,%-]+\Z")
HOSTILE = 'it\'s $(id) `id` "x" ; rm -rf ~ \\ $HOME *'


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("HPCNB_CLUSTER", raising=False)
    monkeypatch.delenv("HPCNB_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))


def bash_n(script: str) -> None:
    bash = shutil.which("bash")
    assert bash
    proc = subprocess.run([bash, "-n"], input=script, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def directives(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith(("#SBATCH", "#PBS"))]


CASES = [
    {},
    {"account": "m1234", "cpus": 4, "mem": "16G", "gpus": 2, "hours": 10, "name": "nb-1"},
    {"partition": "debug", "time": "00:30:00", "mem": "500M", "notebook_dir": HOSTILE},
]


@pytest.mark.parametrize("scheduler", ["slurm", "pbs", "local", "lsf"])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("cluster", sorted(p.stem for p in paths.site_config_dir().glob("*.toml")))
def test_every_site_renders_valid_bash(cluster: str, case: int, scheduler: str) -> None:
    # Every site's values through every scheduler's template; its profiles' own recipes and limits
    # are test_site_configs.py's.
    cfg = dataclasses.replace(load_cluster(cluster), profiles=(), max_hours=None, partition=None)
    values = dict(CASES[case])
    values.setdefault("account", "ab12")
    script = render_script(cfg, build_request(cfg, **values), scheduler)  # type: ignore[arg-type]
    assert script.startswith("#!/bin/bash -l\n" if scheduler in ("slurm", "lsf") else "#!/bin/bash\n")
    bash_n(script)
    for line in directives(script):
        assert DIRECTIVE.match(line), line
    assert script.count(f"<<'{DELIMITER}'") == 1
    assert "JUPYTER_TOKEN" not in script.split(f"<<'{DELIMITER}'")[0]


def test_slurm_directives_exact() -> None:
    cfg = dataclasses.replace(load_cluster("perlmutter"), extra_directives=("--licenses=scratch",))
    r = build_request(cfg, partition="gpu", account="m1234", cpus=4, mem="16G", gpus=1, hours=26,
                      name="nb")
    assert directives(render_script(cfg, r, "slurm")) == [
        "#SBATCH --job-name=nb",
        "#SBATCH --time=1-02:00:00",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --qos=shared",
        "#SBATCH --constraint=gpu",
        "#SBATCH --account=m1234_g",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16G",
        "#SBATCH --gpus=1",
        "#SBATCH --licenses=scratch",
        "#SBATCH --output=/dev/null",
        "#SBATCH --error=/dev/null",
    ]


def test_gres_flag() -> None:
    cfg = dataclasses.replace(load_cluster("euler"), gpu_flag="--gres", profiles=(), partition=None)
    assert "#SBATCH --gres=gpu:2" in render_script(cfg, build_request(cfg, gpus=2), "slurm")


def test_pbs_select_and_flat() -> None:
    # The scheduler's formats alone (no profile: --partition develop is a plain queue here).
    derecho = dataclasses.replace(load_cluster("derecho"), profiles=(), partition="develop")
    r = build_request(derecho, account="UABC0001", cpus=8, mem="20G", gpus=1, hours=2)
    d = directives(render_script(derecho, r, "pbs"))
    assert "#PBS -l select=1:ncpus=8:mem=20gb:ngpus=1" in d
    assert "#PBS -l walltime=02:00:00" in d and "#PBS -q develop" in d and "#PBS -A UABC0001" in d
    gadi = dataclasses.replace(load_cluster("gadi"), profiles=(), partition="normal")
    d = directives(render_script(gadi, build_request(gadi, account="ab12", cpus=12, mem="4G"), "pbs"))
    assert "#PBS -P ab12" in d and "#PBS -l ncpus=12,mem=4gb" in d
    assert not any("select" in line for line in d)


def test_pbs_without_resources_has_no_select() -> None:
    cfg = load_cluster("local")
    assert not any("-l select" in x for x in directives(render_script(cfg, build_request(cfg), "pbs")))


def test_local_walltime_line_and_no_directives() -> None:
    cfg = load_cluster("local")
    script = render_script(cfg, build_request(cfg, time="01:30:00"), "local")
    assert "\n# hpcnb-walltime-seconds: 5400\n" in script
    assert directives(script) == []


def test_hostile_values_are_quoted_once() -> None:
    cfg = load_cluster("local")
    script = render_script(cfg, build_request(cfg, notebook_dir=HOSTILE), "local")
    line = next(x for x in script.splitlines() if x.startswith("export HPCNB_NOTEBOOK_DIR="))
    assert shlex.split(line.split("=", 1)[1]) == [HOSTILE]
    out = subprocess.run(
        ["bash", "-c", line + '\nprintf %s "$HPCNB_NOTEBOOK_DIR"'], capture_output=True, text=True
    )
    assert out.stdout == HOSTILE


def test_setup_lines_are_code_in_their_own_eval_one_line_each() -> None:
    cfg = dataclasses.replace(load_cluster("local"), setup=("module load python", "export A=1"))
    script = render_script(cfg, build_request(cfg), "local")
    assert ("then eval 'module load python' || hpcnb_setup_failed 1 'module load python' \"exited $?\" 3;"
            in script)
    assert "then eval 'export A=1' || hpcnb_setup_failed 2 'export A=1' \"exited $?\" 3;" in script
    bad = dataclasses.replace(cfg, setup=("ok\nrm -rf ~",))
    with pytest.raises(ConfigError, match=r"setup line .* one line"):
        render_script(bad, build_request(cfg), "local")


@pytest.mark.parametrize("line", ["echo 'unbalanced", "cat <<EOF", "echo '\\'", "{", "fi", "$(}"])
def test_a_broken_setup_line_cannot_break_the_script(line: str) -> None:
    cfg = dataclasses.replace(load_cluster("local"), setup=(line, "export A=1"))
    bash_n(render_script(cfg, build_request(cfg), "local"))


def test_directives_are_checked_again_at_render_time() -> None:
    cfg = dataclasses.replace(load_cluster("euler"), extra_directives=("--comment=$(id)",))
    with pytest.raises(ConfigError, match="extra_directives"):
        render_script(cfg, build_request(cfg), "slurm")


def test_directive_check_is_last_line_of_defence(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "slurm.sh.j2").write_text("#!/bin/bash\n#SBATCH --comment={{ '$(id)' }}\n")
    cfg = dataclasses.replace(load_cluster("euler"), template_dir=str(tmp_path))
    with pytest.raises(UsageError, match="directive"):
        render_script(cfg, build_request(cfg), "slurm")


def test_shq() -> None:
    assert shq("plain") == "plain"
    assert shq("a b") == "'a b'"
    assert shq(5) == "5"
    with pytest.raises(UsageError):
        shq("a\x00b")
    with pytest.raises(TypeError):
        shq(None)


def test_unknown_scheduler() -> None:
    cfg = load_cluster("local")
    with pytest.raises(ConfigError, match="htcondor"):
        render_script(cfg, build_request(cfg), "htcondor")


def test_template_dir_override(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "local.sh.j2").write_text("#!/bin/bash\n# custom {{ request.name | shq }}\n")
    cfg: ClusterConfig = dataclasses.replace(load_cluster("local"), template_dir=str(tmp_path))
    assert render_script(cfg, build_request(cfg, name="x"), "local") == "#!/bin/bash\n# custom x\n"


def test_strict_undefined(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "local.sh.j2").write_text("#!/bin/bash\n{{ request.nope }}\n")
    cfg = dataclasses.replace(load_cluster("local"), template_dir=str(tmp_path))
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        render_script(cfg, build_request(cfg), "local")


def test_a_setup_line_ending_in_a_backslash_is_refused() -> None:
    # bash's `eval 'x \'` would read the script's NEXT line to finish the continuation
    cfg = dataclasses.replace(load_cluster("local"), setup=("echo trailing \\",))
    with pytest.raises(ConfigError, match="ends in a backslash"):
        render_script(cfg, build_request(cfg), "local")


def test_torque_flavour_gets_nodes_ppn_not_select(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[clusters.t]\nscheduler = "pbs"\npbs_flavour = "torque"\nlogin_host = "h"\n')
    monkeypatch.setenv("HPCNB_CONFIG", str(config))
    cfg = load_cluster("t")
    d = directives(render_script(cfg, build_request(cfg, cpus=4, gpus=1, mem="4G"), "pbs"))
    assert "#PBS -l nodes=1:ppn=4:gpus=1,mem=4gb" in d
    assert not any("select" in line for line in d)
    config.write_text('[clusters.t]\nscheduler = "pbs"\npbs_flavour = "torque"\nlogin_host = "h"\n'
                      'account_flag = "-P"\n')
    with pytest.raises(ConfigError, match="proxy user"):
        load_cluster("t")
