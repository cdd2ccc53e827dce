"""Apps: what a job starts on its node. Jupyter is the default; code-server and RStudio Server ship
as recipes, and a site or user config adds its own (`[apps.NAME]`, docs/site-configs.md "Apps").

A recipe says how to start the app after the setup lines, where it listens, how hpcnb knows it
serves, and how the browser gets in. The secret is made on the node by the launcher
(templates/launcher.py) and reaches the app only in its environment (`secret_env`): never in argv
(world-readable in /proc) nor in the job script (kept by the scheduler). The launcher fills these
placeholders in `command` / `socket_command` words, and nothing else:

    {host} {port}   where to listen (tunnel direct / node-ssh)
    {socket}        a unix socket path (tunnel socket: only apps with a socket_command)
    {session}       the job's session folder (private, 0700)
    {dir}           the notebook_dir (--notebook-dir), else the home directory
    {user}          the user's name on the node
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from hpcnb.errors import ConfigError, UsageError
from hpcnb.names import checked_tables

PLACEHOLDERS = ("host", "port", "socket", "session", "dir", "user")
LOGINS = ("token", "password")  # token: the URL carries it (?token=); password: the user types it
# What looks like a placeholder: {lower_case}. Other braces (a shell's ${HOME}) are left alone.
_PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")
_ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}\Z")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/%-]{0,200}\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class App:
    """One recipe. `command` empty: hpcnb's own Jupyter start (the launcher knows Jupyter's
    options, Notebook 6's NotebookApp, --allow-root); anything else runs `command`."""

    name: str
    command: tuple[str, ...] = ()  # argv words, port mode ({host} {port})
    socket_command: tuple[str, ...] = ()  # argv words on a unix socket ({socket}); () = no socket mode
    ready: str = "/"  # GET this on the node: any answer below 400 means it serves
    secret_env: str = ""  # the environment variable the node-made secret goes in
    login: str = "token"
    url_path: str = "/"  # what the browser opens
    setup: tuple[str, ...] = ()  # shell lines run after the site's (module load code-server)
    # A built-in recipe's own shell lines, after `setup`: not a config key, so that a user's
    # `[apps.rstudio] setup = [...]` adds its lines to the recipe's instead of replacing them.
    prepare: tuple[str, ...] = ()
    description: str = ""
    docs: str = ""

    @property
    def setup_lines(self) -> tuple[str, ...]:
        """What the job script runs for this app, after the cluster's setup lines."""
        return (*self.setup, *self.prepare)

    @property
    def is_jupyter(self) -> bool:
        return not self.command

    def recipe(self) -> str:
        """The recipe as the launcher reads it (HPCNB_APP, one JSON line)."""
        if self.is_jupyter:  # the launcher's own rules
            return json.dumps({"name": self.name})
        shell_side = ("setup", "prepare", "description", "docs")  # the job script's, or no one's
        fields = {k: v for k, v in asdict(self).items() if k not in shell_side}
        return json.dumps(fields, separators=(",", ":"))


JUPYTER = App(name="jupyter", ready="/api", secret_env="JUPYTER_TOKEN", url_path="/lab",
              description="Jupyter (JupyterLab, or the Notebook with jupyter = \"notebook\")",
              docs="https://jupyter-server.readthedocs.io/en/latest/other/full-config.html")

# code-server's options: `code-server --help` of 4.100 (github.com/coder/code-server, docs/FAQ.md
# "How do I change the password?": the PASSWORD environment variable). /healthz answers 200 without
# a login (docs/FAQ.md "Healthz endpoint"). Settings and extensions stay in the user's
# ~/.local/share/code-server, as with any code-server they run.
_CODE_SERVER_FLAGS = ("--auth", "password", "--disable-telemetry", "--disable-update-check",
                      "--disable-workspace-trust", "--ignore-last-opened", "{dir}")
CODE_SERVER = App(
    name="code-server",
    command=("code-server", "--bind-addr", "{host}:{port}", *_CODE_SERVER_FLAGS),
    socket_command=("code-server", "--socket", "{socket}", "--socket-mode", "600", *_CODE_SERVER_FLAGS),
    ready="/healthz", secret_env="PASSWORD", login="password", url_path="/",
    description="VS Code in the browser (code-server); log in with the password hpcnb prints",
    docs="https://coder.com/docs/code-server/FAQ",
)

# RStudio Server as Open OnDemand starts it for one user without root (github.com/OSC/
# bc_osc_rstudio_server: template/script.sh.erb and its bin/auth): a PAM helper script that
# accepts the job's user with the password in RSTUDIO_PASSWORD. Not run here (no RStudio Server on
# the testbed): README "Apps" says so.
_RSTUDIO_AUTH = (
    "printf '%s\\n' '#!/bin/bash' '[ \"$1\" = \"$USER\" ] || exit 1' 'read -rs p' "
    "'[ -n \"$RSTUDIO_PASSWORD\" ] && [ \"$p\" = \"$RSTUDIO_PASSWORD\" ]' "
    ">\"$HPCNB_SESSION_DIR/rstudio-auth\" && chmod 700 \"$HPCNB_SESSION_DIR/rstudio-auth\""
)
RSTUDIO = App(
    name="rstudio",
    command=("rserver", "--www-address={host}", "--www-port={port}", "--auth-none=0",
             "--auth-pam-helper-path={session}/rstudio-auth", "--auth-encrypt-password=0",
             "--server-user={user}", "--server-data-dir={session}/rstudio-server",
             "--secure-cookie-key-file={session}/rstudio-server/secure-cookie-key"),
    ready="/", secret_env="RSTUDIO_PASSWORD", login="password", url_path="/",
    prepare=(_RSTUDIO_AUTH, "mkdir -p \"$HPCNB_SESSION_DIR/rstudio-server\""),
    description="RStudio Server, where the site provides rserver (module load rstudio ...)",
    docs="https://github.com/OSC/bc_osc_rstudio_server",
)

BUILT_IN: dict[str, App] = {app.name: app for app in (JUPYTER, CODE_SERVER, RSTUDIO)}
BUILT_IN_APPS = tuple(BUILT_IN[name] for name in sorted(BUILT_IN))


# ---------------------------------------------------------------- config tables


def _words(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return "a list of non-empty strings"
    for word in value:
        if _CONTROL_RE.search(word):
            return "words without newlines or control characters"
        unknown = [p for p in _PLACEHOLDER_RE.findall(word) if p not in PLACEHOLDERS]
        if unknown:
            names = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
            return f"words whose placeholders are among {names} (not {{{unknown[0]}}})"
    if value and value[0].startswith("-"):
        return "a command, not an option, first"
    return None


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and not _CONTROL_RE.search(value) else "one line of text"


def _lines(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(v, str) and not _CONTROL_RE.search(v) for v in value)
    return None if ok else "a list of one-line strings"


def _pattern(regex: re.Pattern[str], rule: str) -> Any:
    return lambda value: None if isinstance(value, str) and regex.match(value) else rule


_CHECKS = {
    "command": _words, "socket_command": _words,
    "ready": _pattern(_PATH_RE, "a path such as /healthz"),
    "url_path": _pattern(_PATH_RE, "a path such as /"),
    "secret_env": _pattern(_ENV_RE, "an environment variable name (A-Z, 0-9, _)"),
    "login": lambda v: None if v in LOGINS else " or ".join(f'"{x}"' for x in LOGINS),
    "setup": _lines, "description": _text, "docs": _text,
}  # fmt: skip


def check_tables(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    """`apps` of a config file -> {name: checked values}; ConfigError naming file and key."""
    return checked_tables(raw, where, "apps", "app", _CHECKS)


def build(tables: Mapping[str, dict[str, Any]], where: str) -> tuple[App, ...]:
    """Checked tables over the built-in recipes (key by key) -> every App this cluster knows."""
    apps = dict(BUILT_IN)
    for name, values in tables.items():
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        app = replace(apps[name], **fields) if name in apps else App(name=name, **fields)
        if name == "jupyter" and (app.command or app.socket_command):
            raise ConfigError(f"{where}: apps.jupyter is hpcnb's own start; name your recipe otherwise")
        if not app.is_jupyter:
            if not app.secret_env:
                raise ConfigError(f"{where}: apps.{name} needs secret_env: the variable its password "
                                  "or token is passed in (never argv)")
            if not any("{port}" in w for w in app.command):
                raise ConfigError(f"{where}: apps.{name}: command must say where to listen ({{port}})")
            if app.socket_command and not any("{socket}" in w for w in app.socket_command):
                raise ConfigError(f"{where}: apps.{name}: socket_command must name {{socket}}")
        apps[name] = app
    return tuple(apps[name] for name in sorted(apps))


def pick(apps: tuple[App, ...], name: str, tunnel: str, where: str | None = None) -> App:
    """The app called NAME on a cluster with this tunnel mode. Why not: a UsageError (--app), or a
    ConfigError naming WHERE (the config's `app`)."""
    known = {app.name: app for app in apps}
    app = known.get(name)
    problem = None
    if app is None:
        problem = f"{name!r} is not an app of this cluster (known: {', '.join(sorted(known))})"
    elif tunnel == "socket" and not app.is_jupyter and not app.socket_command:
        problem = (f"{name!r} cannot listen on a unix socket, and this cluster's tunnel is "
                   "\"socket\" (add socket_command to its recipe, or use another tunnel)")
    if problem is None and app is not None:
        return app
    if where is not None:
        raise ConfigError(f"{where}: app = {problem}")
    raise UsageError(f"--app {problem}")
