"""Names of clusters, partitions, queues, accounts and jobs: one shape for all of them.

Letters, digits, '.', '_', '-', first a letter or digit, at most 64: what Slurm and PBS accept
for partition/queue/account names and job names, and safe as a TOML bare key, a file name and a
scheduler directive value without quoting.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
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
