"""`hpcnb jupyter install`: a Python environment with JupyterLab on the cluster, made where the
site recommends (its site config's `jupyter_env`: project or work space, not a small-quota home
where the site says so), checked the way `hpcnb doctor` checks, and recorded in the user's config
as the setup line that activates it.

It runs on the login host (where pip can usually reach PyPI; compute nodes often cannot), with
the site's own setup lines first (`module load python`), so the env is built on the Python the
site provides. Nothing here prints: the CLI says what happened.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpcnb.doctor import jupyter_script
from hpcnb.errors import CommandError, UsageError, last_line

if TYPE_CHECKING:
    from hpcnb.cluster import Cluster

REQUIREMENTS = ("jupyterlab>=4", "jupyter_server>=2")
DEFAULT_ENV = "$HOME/.hpcnb/jupyter"
INSTALL_TIMEOUT_S = 1800.0  # pip on a busy shared file system is slow
MARK = "hpcnb-env: "
# A path on the cluster: `~`, `$VAR` and `${VAR}` are expanded there; no command substitution,
# quotes or spaces (it is put inside double quotes in the script).
_VAR = r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?"
_PATH_RE = re.compile(rf"^(~|{_VAR}|[A-Za-z0-9_./-])({_VAR}|[A-Za-z0-9_./-]){{0,1023}}\Z")
_PIP_OPTION_RE = re.compile(r"^--?[A-Za-z][A-Za-z0-9-]*(=[A-Za-z0-9_.:/@+,%=-]+)?\Z")


@dataclass(frozen=True)
class Installed:
    path: str  # absolute, as the cluster expanded it
    python: str  # its Python's version
    jupyterlab: str  # JupyterLab's version

    @property
    def activate(self) -> str:
        """The setup line that activates it."""
        return f"source {shlex.quote(self.path)}/bin/activate"


def check_path(path: str, account: str | None = None) -> str:
    """A path on the cluster, safe to put in double quotes there. `{account}` (a site's project
    folder, /project/{account}/...) is the cluster's account from the config."""
    if "{account}" in path:
        if not account:
            raise UsageError(f"{path!r} names the project ({{account}}): set account in your config, "
                             "or give --path")
        path = path.replace("{account}", account)
    if not _PATH_RE.match(path) or ".." in path.split("/"):
        raise UsageError(f"--path {path!r} must be a path on the cluster: letters, digits, . _ - /, "
                         "and $VAR or ~ (expanded there)")
    return "$HOME" + path[1:] if path.startswith("~") else path


def check_pip_options(options: tuple[str, ...]) -> tuple[str, ...]:
    for option in options:
        if not _PIP_OPTION_RE.match(option):
            raise UsageError(f"--pip-option {option!r} must be one pip option: --name or --name=VALUE")
    return options


def install_script(setup: tuple[str, ...], python: str, path: str, pip_options: tuple[str, ...]) -> str:
    """bash: the site's setup lines, then a venv at `path` with JupyterLab, then its versions."""
    q = shlex.quote
    lines = [f"HPCNB_PYTHON={q(python)}"]
    for number, line in enumerate(setup, 1):
        lines.append(f"eval {q(line)} || {{ echo \"hpcnb: setup line {number} exited $?: \"{q(line)} >&2; "
                     "exit 90; }")
    pip = " ".join(q(o) for o in (*pip_options, *REQUIREMENTS))
    lines += [
        'command -v "$HPCNB_PYTHON" >/dev/null 2>&1 || '
        '{ echo "hpcnb: $HPCNB_PYTHON not found after the setup lines" >&2; exit 91; }',
        '"$HPCNB_PYTHON" -c "import sys; sys.exit(sys.version_info < (3, 8))" || '
        '{ echo "hpcnb: JupyterLab 4 needs Python >= 3.8; $("$HPCNB_PYTHON" -V 2>&1) is older: '
        'load a newer Python in the setup lines" >&2; exit 92; }',
        f'ENV="{path}"',  # checked by check_path: only $VAR expansions, no substitutions
        'mkdir -p "$(dirname "$ENV")" && cd "$(dirname "$ENV")" && ENV="$(pwd -P)/$(basename "$ENV")"',
        '[ -x "$ENV/bin/python" ] || "$HPCNB_PYTHON" -m venv "$ENV" || '
        '{ echo "hpcnb: cannot make a venv at $ENV (python3-venv missing?)" >&2; exit 93; }',
        f'"$ENV/bin/python" -m pip install --disable-pip-version-check -q {pip} >&2 || '
        '{ echo "hpcnb: pip could not install JupyterLab into $ENV" >&2; exit 94; }',
        f'echo "{MARK}$ENV"',
        '"$ENV/bin/python" -c "import sys, jupyterlab; print(sys.version.split()[0], '
        'jupyterlab.__version__)"',
    ]
    return "\n".join(lines) + "\n"


def install(cluster: Cluster, path: str | None = None, pip_options: tuple[str, ...] = ()) -> Installed:
    """Make (or complete) the env on the cluster and check it as a job would use it."""
    cfg = cluster.cfg
    target = check_path(path or cfg.jupyter_env or DEFAULT_ENV, cfg.account)
    script = install_script(_site_setup(cluster), cfg.python, target, check_pip_options(pip_options))
    argv = ["bash", "-lc", script]
    result = cluster.remote.run(argv, timeout=INSTALL_TIMEOUT_S)
    out = result.stdout.splitlines()
    found = [line[len(MARK):] for line in out if line.startswith(MARK)]
    if result.exit_status != 0 or not found:
        raise CommandError(f"could not install JupyterLab on {cfg.name}", argv=["bash", "-lc", "..."],
                           exit_status=result.exit_status, stderr=result.stderr,
                           hint="check the site's setup lines, and that the login host reaches the "
                                "package index (else --pip-option=--index-url=...)")
    versions = out[-1].split() if out else []
    installed = Installed(found[-1], *[*versions, "?", "?"][:2])
    setup = tuple(setup_with(cluster, installed))
    check = cluster.remote.run(["bash", "-c", jupyter_script(setup, cfg.python, cfg.jupyter)],
                               timeout=300)
    if check.exit_status != 0:
        raise CommandError(f"the new env at {installed.path} does not start JupyterLab",
                           argv=["bash", "-c", "..."], exit_status=check.exit_status,
                           stderr=check.stderr or last_line(check.stdout))
    return installed


def _site_setup(cluster: Cluster) -> tuple[str, ...]:
    """The cluster's setup lines without an env activation (an earlier install's, or a broken one)."""
    return tuple(line for line in cluster.cfg.setup if not line.rstrip().endswith("/bin/activate"))


def setup_with(cluster: Cluster, installed: Installed) -> list[str]:
    """The cluster's setup lines, its old env activation replaced by the new env's."""
    return [*_site_setup(cluster), installed.activate]
