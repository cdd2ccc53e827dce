"""The `persist` setting of a cluster: how long a keeper waits unused before it logs out."""

from __future__ import annotations

import re

from hpcnb.errors import ConfigError

DEFAULT = "12h"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_OFF = ("no", "off", "false", "0")


def parse(value: object, where: str) -> float | None:
    """Seconds, or None for no keeper. Accepts "12h", "30m", "90s", "1d", "no", false."""
    if value is False or str(value).strip().lower() in _OFF:
        return None
    found = _RE.match(str(value).strip().lower())
    if value is True or not found or float(found.group(1)) <= 0:
        raise ConfigError(f"{where}: persist must be a duration like \"12h\", \"30m\" or \"no\", "
                          f"got {value!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]
