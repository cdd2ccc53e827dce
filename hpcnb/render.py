"""Job scripts from templates: jinja2 with StrictUndefined, autoescape off, ONE quoting filter.

Rules the templates follow:
  * values that reach the shell go through ``shq`` (shlex.quote); templates never add quotes;
  * #SBATCH/#PBS directive values come only from the validated JobRequest and the cluster
    config's checked flags; render_script re-checks every directive line before returning;
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
from hpcnb.config import ACCOUNT_FLAGS, GPU_FLAGS, PARTITION_FLAGS, ClusterConfig, check_script_values
from hpcnb.errors import ConfigError, UsageError
from hpcnb.request import JobRequest

TEMPLATES = {"slurm": "slurm.sh.j2", "pbs": "pbs.sh.j2", "local": "local.sh.j2"}
LAUNCHER = "launcher.py"
DELIMITER = "HPCNB_LAUNCHER_EOF"
_DIRECTIVE_LINE = re.compile(r"^#(SBATCH|PBS) -[A-Za-z0-9 ._:=/@+,%-]+\Z")


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


def _flags(cfg: ClusterConfig, scheduler: str) -> dict[str, str]:
    """The directive flags for SCHEDULER, from cfg when they belong to it, else the defaults."""
    out = {}
    for key, table, value in (
        ("partition", PARTITION_FLAGS, cfg.partition_flag),
        ("account", ACCOUNT_FLAGS, cfg.account_flag),
        ("gpu", GPU_FLAGS, cfg.gpu_flag),
    ):
        choices = table.get(scheduler, ("",))
        out[key] = value if value in choices else choices[0]
    return out


def _pbs_resources(cfg: ClusterConfig, request: JobRequest, gpu_flag: str) -> str:
    """`-l` chunk: select=1:ncpus=N:mem=Xgb (PBS Pro) or ncpus=N,mem=Xgb (cfg.pbs_resources=flat)."""
    parts = []
    if request.cpus:
        parts.append(f"ncpus={request.cpus}")
    if request.mem_mb:
        parts.append(f"mem={request.pbs_mem}")
    if request.gpus:
        parts.append(f"{gpu_flag}={request.gpus}")
    if not parts:
        return ""
    if cfg.pbs_resources == "flat":
        return ",".join(parts)
    return ":".join(["select=1", *parts])


def _check_cfg(cfg: ClusterConfig) -> None:
    """Config values that reach the script, checked again: a ClusterConfig can be built in code."""
    values = {key: getattr(cfg, key) for key in ("setup", "extra_directives", "python", "notebook_dir")}
    check_script_values(values, f"{cfg.source} [{cfg.name}]")


def render_script(cfg: ClusterConfig, request: JobRequest, scheduler_name: str) -> str:
    """The complete job script for REQUEST on CFG, for scheduler SCHEDULER_NAME."""
    if scheduler_name not in TEMPLATES:
        raise ConfigError(
            f"no job-script template for scheduler {scheduler_name!r} (known: {', '.join(TEMPLATES)})"
        )
    _check_cfg(cfg)
    env = environment(cfg)
    try:
        launcher, launcher_path, _ = env.loader.get_source(env, LAUNCHER)  # type: ignore[union-attr]
        template = env.get_template(TEMPLATES[scheduler_name])
    except jinja2.TemplateNotFound as e:
        raise ConfigError(f"template {e.name!r} not found in {environment_dirs(cfg)}") from None
    if not launcher.endswith("\n"):
        launcher += "\n"
    if any(line.strip() == DELIMITER for line in launcher.splitlines()):
        raise ConfigError(f"{launcher_path}: contains the heredoc delimiter line {DELIMITER}")
    flags = _flags(cfg, scheduler_name)
    script = template.render(
        cfg=cfg,
        request=request,
        setup=cfg.setup,
        flags=flags,
        resources=_pbs_resources(cfg, request, flags["gpu"]),
        launcher_source=launcher,
        delimiter=DELIMITER,
    )
    for line in script.split("\n"):  # bash and sbatch split lines at \n only
        if line.startswith(("#SBATCH", "#PBS")) and not _DIRECTIVE_LINE.match(line):
            raise UsageError(f"refusing to write directive line {line!r}: unexpected characters")
    return script


def environment_dirs(cfg: ClusterConfig) -> list[str]:
    """Template search path for CFG, for messages."""
    return ([cfg.template_dir] if cfg.template_dir else []) + [str(paths.template_dir())]
