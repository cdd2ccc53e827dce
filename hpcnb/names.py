"""Names of clusters, partitions, queues, accounts and jobs: one shape for all of them.

Letters, digits, '.', '_', '-', first a letter or digit, at most 64: what Slurm and PBS accept
for partition/queue/account names and job names, and safe as a TOML bare key, a file name and a
scheduler directive value without quoting.
"""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
NAME_RULE = "1-64 letters, digits, '.', '_', '-' (first a letter or digit)"
