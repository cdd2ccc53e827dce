"""The config values that reach a job script as text (setup lines, directives, python,
notebook_dir), checked where a config is loaded (hpcnb.config) and again where a script is rendered
(hpcnb.render: a ClusterConfig can be built in code)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hpcnb.errors import ConfigError

# A directive is read by sbatch/qsub, not by bash, but it sits on a bash comment line. Only a plain
# option is accepted: `--long`, `--long=VALUE`, `-x`, `-x VALUE` (one space), VALUE from a
# conservative character set (no quotes, no shell metacharacters, no whitespace, one line), so no
# config can smuggle shell text or a second option into the header.
_DIRECTIVE_VALUE = r"[A-Za-z0-9._:=/@+,%-]{1,200}"
_DIRECTIVE_RE = re.compile(
    rf"^(?:--[A-Za-z][A-Za-z0-9-]{{0,63}}(?:={_DIRECTIVE_VALUE})?|-[A-Za-z](?: {_DIRECTIVE_VALUE})?)\Z"
)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_script_values(values: Mapping[str, Any], where: str) -> None:
    """The keys that reach the job script as text: setup, extra_directives (and the profiles'
    directives), python, notebook_dir.

    Called when a config is loaded and again by render.py (a ClusterConfig can be built in code).
    """
    lines = [*(values.get("setup") or ()),
             *(line for p in values.get("profiles") or () for line in p.setup or ()),
             *(line for a in values.get("apps") or () for line in a.setup_lines)]
    for line in lines:
        if _CONTROL_RE.search(line):
            raise ConfigError(f"{where}: setup line {line!r} must be one line (no newline/NUL)")
        if (len(line) - len(line.rstrip("\\"))) % 2:
            # a line continuation: bash's eval would read the script's next line to finish it
            raise ConfigError(f"{where}: setup line {line!r} must be one line (it ends in a backslash)")
    directives = [("extra_directives", d) for d in values.get("extra_directives") or ()]
    directives += [(f"profiles.{p.name}.directives", d) for p in values.get("profiles") or ()
                   for d in p.directives]
    for key, d in directives:
        if not _DIRECTIVE_RE.match(d):
            raise ConfigError(
                f"{where}: {key} entry {d!r} is not a plain option: use --name, --name=VALUE, "
                "-x or -x VALUE, VALUE of letters, digits and ._:=/@+,%- (no quotes, spaces or newlines)"
            )
    python = values.get("python", "python3")
    if not python or len(python) > 4096 or python.startswith("-") or _CONTROL_RE.search(python):
        raise ConfigError(
            f"{where}: python {python!r} must be a command name or path: one line of 1..4096 "
            "characters, not starting with '-'"
        )
    nb = values.get("notebook_dir")
    if nb is not None and (not nb or len(nb) > 4096 or _CONTROL_RE.search(nb) or "\t" in nb):
        raise ConfigError(f"{where}: notebook_dir {nb!r} must be a path of 1..4096 characters, one line")
