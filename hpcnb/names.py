"""Names of clusters, partitions, queues, accounts and jobs: one shape for all of them.

Letters, digits, '.', '_', '-', first a letter or digit, at most 64: what Slurm and PBS accept
for partition/queue/account names and job names, and safe as a TOML bare key, a file name and a
scheduler directive value without quoting.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from hpcnb.errors import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
NAME_RULE = "1-64 letters, digits, '.', '_', '-' (first a letter or digit)"


def named_tables(raw: Any, where: str, key: str, what: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The [KEY.NAME] tables of a TOML file, each NAME checked; ConfigError saying where."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: '{key}' must be a table of [{key}.NAME] tables")
    for name, table in raw.items():
        if not NAME_RE.match(name):
            raise ConfigError(f"{where}: {what} name {name!r} must be {NAME_RULE}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {key}.{name} must be a table")
        yield name, table


def checked_tables(raw: Any, where: str, key: str, what: str,
                   checks: Mapping[str, Callable[[Any], str | None]]) -> dict[str, dict[str, Any]]:
    """[KEY.NAME] tables whose every key has a check (None: fine, else what it must be):
    {name: values}; the first unknown key or bad value is a ConfigError naming file and key."""
    out: dict[str, dict[str, Any]] = {}
    for name, table in named_tables(raw, where, key, what):
        for field, value in table.items():
            check = checks.get(field)
            if check is None:
                raise ConfigError(f"{where}: {key}.{name}: unknown key {field!r} (valid keys: "
                                  f"{', '.join(sorted(checks))})")
            problem = check(value)
            if problem:
                raise ConfigError(f"{where}: {key}.{name}: {field} must be {problem}, got {value!r}")
        out[name] = dict(table)
    return out
