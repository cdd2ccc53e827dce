"""Job scripts from templates: jinja2 with StrictUndefined, autoescape off, ONE quoting filter.

Rules the templates follow:
  * values that reach the shell go through ``shq`` (shlex.quote); templates never add quotes;
  * #SBATCH/#PBS directive values come only from the validated JobRequest, in the scheduler's own
    formats (Scheduler.job_values), and the cluster config's checked flags (Scheduler.flags);
    render_script re-checks every directive line before returning;
  * setup lines are shell code the user chose (their own config, or a shipped site config they
    picked), like lines in their ~/.bashrc, and run on purpose; but each is rendered as
    ``eval <shq(line)>``: quoted, a line can never change the script's structure (an unbalanced
    quote, ``<<EOF``, a trailing backslash stay inside that one eval), so the script always parses
    and nothing of a line runs outside its own eval. Lines must still be one line each.
"""

from __future__ import annotations

import re
import shlex
from functools import lru_cache
from typing import Any

import jinja2

from hpcnb import paths
from hpcnb.apps import pick
from hpcnb.config import ClusterConfig
from hpcnb.errors import ConfigError, UsageError
from hpcnb.request import JobRequest
from hpcnb.schedulers import SCHEDULERS, Scheduler, get_scheduler
from hpcnb.script_values import check_script_values

LAUNCHER = "launcher.py"
DELIMITER = "HPCNB_LAUNCHER_EOF"
# Every scheduler's directive lines, wherever they appear: a plain option after the prefix.
_PREFIXES = tuple(sorted({c.directive_prefix for c in SCHEDULERS.values() if c.directive_prefix}))
_DIRECTIVE_LINE = re.compile(rf"^({'|'.join(map(re.escape, _PREFIXES))}) -[A-Za-z0-9 ._:=/@+,%-]+\Z")


def shq(value: Any) -> str:
    """Quote one value for bash. Refuses None (a template bug) and NUL (no shell can carry it)."""
    if value is None or isinstance(value, jinja2.Undefined):
        raise TypeError("shq got no value: the template quoted something that is not set")
    text = str(value)
    if "\x00" in text:
        raise UsageError(f"value {text!r} contains a NUL byte, which a shell cannot carry")
    return shlex.quote(text)


@lru_cache(maxsize=8)
def _environment(search_path: tuple[str, ...]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(list(search_path)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["shq"] = shq
    return env


def environment(cfg: ClusterConfig) -> jinja2.Environment:
    """The jinja2 Environment for CFG: its template_dir (if any) first, then the shipped one."""
    search = ([cfg.template_dir] if cfg.template_dir else []) + [str(paths.template_dir())]
    return _environment(tuple(search))


def _check_cfg(cfg: ClusterConfig) -> None:
    """Config values that reach the script, checked again: a ClusterConfig can be built in code."""
    keys = ("setup", "extra_directives", "profiles", "apps", "python", "notebook_dir")
    values = {key: getattr(cfg, key) for key in keys}
    check_script_values(values, f"{cfg.source} [{cfg.name}]")


def render_script(cfg: ClusterConfig, request: JobRequest, scheduler: Scheduler | str) -> str:
    """The complete job script for REQUEST on CFG, in SCHEDULER's template (an instance or name)."""
    if isinstance(scheduler, str):
        try:
            scheduler = get_scheduler(scheduler)
        except ValueError as exc:
            raise ConfigError(f"no job-script template: {exc}") from None
    _check_cfg(cfg)
    app = pick(cfg.apps, request.app, cfg.tunnel)
    env = environment(cfg)
    try:
        launcher, launcher_path, _ = env.loader.get_source(env, LAUNCHER)  # type: ignore[union-attr]
        template = env.get_template(scheduler.template)
    except jinja2.TemplateNotFound as e:
        raise ConfigError(f"template {e.name!r} not found in {environment_dirs(cfg)}") from None
    if not launcher.endswith("\n"):
        launcher += "\n"
    if any(line.strip() == DELIMITER for line in launcher.splitlines()):
        raise ConfigError(f"{launcher_path}: contains the heredoc delimiter line {DELIMITER}")
    script = template.render(
        cfg=cfg,
        request=request,
        job=scheduler.job_values(cfg, request),
        flags=scheduler.flags(cfg),
        setup=(*(cfg.setup if request.setup is None else request.setup), *app.setup_lines),
        app=app,
        launcher_source=launcher,
        delimiter=DELIMITER,
    )
    for line in script.split("\n"):  # bash and sbatch split lines at \n only
        if line.startswith(_PREFIXES) and not _DIRECTIVE_LINE.match(line):
            raise UsageError(f"refusing to write directive line {line!r}: unexpected characters")
    return script


def environment_dirs(cfg: ClusterConfig) -> list[str]:
    """Template search path for CFG, for messages."""
    return ([cfg.template_dir] if cfg.template_dir else []) + [str(paths.template_dir())]
