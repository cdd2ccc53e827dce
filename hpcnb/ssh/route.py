"""The route to a cluster's login host, from the user's ~/.ssh/config (or $HPCNB_SSH_CONFIG): pure.

Parsed by paramiko.SSHConfig (Host and Match blocks, tokens, first value obtained wins). Honoured:
Host aliases, HostName, User, Port, IdentityFile (several), IdentitiesOnly, ProxyJump (several hops,
each looked up in the config itself), ProxyCommand, ServerAliveInterval, UserKnownHostsFile,
GlobalKnownHostsFile, HostKeyAlias, ConnectTimeout, and StrictHostKeyChecking=accept-new (like
--accept-new-host-key). Host-key checking is never turned off: `no`/`off` count as `yes`.

Precedence: what the hpcnb cluster config sets explicitly (user, port other than 22,
identity_file, known_hosts) wins over ~/.ssh/config; the config supplies the rest. Opening the
route is hpcnb.ssh.links'.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paramiko

from hpcnb.errors import ConfigError
from hpcnb.ssh import hostkeys

ENV = "HPCNB_SSH_CONFIG"
DEFAULT_PATH = "~/.ssh/config"
DEFAULT_KEEPALIVE_S = 30  # when ServerAliveInterval is not set: idle firewalls drop silent links
DEFAULT_KEEPALIVE_COUNT = 3  # ServerAliveCountMax's default in ssh_config(5)
MAX_JUMP_DEPTH = 8  # a ProxyJump whose first hop has a ProxyJump ...: stop loops


def config_path() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT_PATH).expanduser()


def load(path: Path | None = None) -> paramiko.SSHConfig:
    """The parsed file; an empty config when it does not exist."""
    path = path or config_path()
    if not path.exists():
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except (OSError, ValueError, paramiko.SSHException) as exc:
        raise ConfigError(f"cannot read the ssh config {path}: {exc}") from exc


@dataclass(frozen=True)
class Hop:
    """One SSH connection of a route: where to, as whom, with what keys and host-key files."""

    alias: str  # the name as written (for messages)
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    known_hosts: tuple[str, ...]  # checked in order; the first receives accepted keys
    accept_new: bool
    keepalive: int  # seconds; 0: off
    host_key_alias: str | None  # HostKeyAlias: the name its host key is recorded under, as written
    proxy_command: str | None = None  # first hop only
    connect_timeout: float | None = None
    allow_agent: bool = True
    # ServerAliveCountMax: with keepalive, the connection is dropped after keepalive x this many
    # seconds without an answer from the host (hpcnb.ssh.dial.drop_when_unanswered)
    keepalive_count: int = DEFAULT_KEEPALIVE_COUNT

    @property
    def key_names(self) -> tuple[str, ...]:
        # OpenSSH looks a HostKeyAlias up as written, with no [ ]:port (sshconnect.c,
        # get_hostfile_hostname_ipaddr); otherwise `host`, or `[host]:port` off port 22.
        if self.host_key_alias:
            return (self.host_key_alias,)
        return (hostkeys.host_key_name(self.hostname, self.port),)


def direct_hop(host: str, port: int, user: str, identity_files: Sequence[str],
               known_hosts: Sequence[str], accept_new: bool, allow_agent: bool = True) -> Hop:
    """A hop straight to host:port, with no ~/.ssh/config (hpcnb.ssh.SSHRemote.connect)."""
    return Hop(alias=host, hostname=host, port=port, user=user, identity_files=tuple(identity_files),
               identities_only=False, known_hosts=tuple(known_hosts), accept_new=accept_new,
               keepalive=DEFAULT_KEEPALIVE_S, host_key_alias=None, allow_agent=allow_agent)


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [w for v in value for w in str(v).split()]
    return str(value).split()


def _yes(value: Any) -> bool:
    return str(value).lower() in {"yes", "true"}


_JUMP_RE = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:@]+)(?::(?P<port>\d+))?$")


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` or `ssh://[user@]host[:port]` -> (user, host, port)."""
    match = _JUMP_RE.match(spec.strip())
    if not match:
        raise ConfigError(f"ProxyJump entry {spec!r} is not [user@]host[:port]")
    port = match.group("port")
    return match.group("user"), match.group("host").strip("[]"), int(port) if port else None


# ssh_config(5) TIME FORMATS: a sequence of time[qualifier] (s, m, h, d, w; none: seconds), summed.
_TIME_RE = re.compile(r"(\d+)([smhdwSMHDW]?)")
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _number(opts: Any, key: str, default: int, name: str, *, time: bool = False) -> int:
    """A whole number of an ssh config option (ServerAliveCountMax), or with `time` one in
    ssh's time format (ServerAliveInterval 1m, ConnectTimeout 30s), or ConfigError."""
    if key not in opts:
        return default
    text = str(opts[key]).strip()
    parts = _TIME_RE.findall(text) if time else []
    if time and parts and "".join(n + u for n, u in parts) == text:
        return sum(int(n) * _TIME_UNITS[u.lower()] for n, u in parts)
    if not time and text.isdigit():
        return int(text)
    kind = "a time such as 30 or 1m" if time else "a whole number"
    raise ConfigError(f"the ssh config {config_path()} gives {name} a {key} of {opts[key]!r}, not {kind}")


@dataclass(frozen=True)
class Defaults:
    """What the hpcnb cluster config says (explicit values win) or offers as a fallback."""

    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    accept_new: bool = False
    explicit: bool = True  # False: only fallbacks (for jump hosts, whose own config comes first)


def _hop(config: paramiko.SSHConfig, name: str, *, user: str | None, port: int | None,
         defaults: Defaults, target: bool) -> tuple[Hop, list[str], str | None]:
    """The hop for `name` + its own ProxyJump list and ProxyCommand."""
    opts = config.lookup(name)
    target = target and defaults.explicit
    hostname = opts.get("hostname", name)
    cfg_port = int(opts["port"]) if "port" in opts else None
    real_port = port or (defaults.port if target else None) or cfg_port or 22
    real_user = user or (defaults.user if target else None) or opts.get("user") or defaults.user \
        or getpass.getuser()
    identities = [*([defaults.identity_file] if target and defaults.identity_file else []),
                  *(str(Path(p).expanduser()) for p in opts.get("identityfile", [])),
                  *([defaults.identity_file] if not target and defaults.identity_file else [])]
    user_files = _words(opts.get("userknownhostsfile")) or [hostkeys.USER_KNOWN_HOSTS]
    global_files = _words(opts.get("globalknownhostsfile")) or [hostkeys.SYSTEM_KNOWN_HOSTS]
    files = [*([defaults.known_hosts] if defaults.known_hosts else []), *user_files, *global_files]
    files = [str(Path(f).expanduser()) for f in files if f.lower() != "none"]
    alias = opts.get("hostkeyalias")
    keepalive = _number(opts, "serveraliveinterval", DEFAULT_KEEPALIVE_S, name, time=True)
    keepalive_count = _number(opts, "serveralivecountmax", DEFAULT_KEEPALIVE_COUNT, name)
    timeout = float(_number(opts, "connecttimeout", 0, name, time=True)) or None
    hop = Hop(
        alias=name, hostname=hostname, port=real_port, user=real_user,
        identity_files=tuple(dict.fromkeys(identities)),
        identities_only=_yes(opts.get("identitiesonly")),
        known_hosts=tuple(dict.fromkeys(files)),
        accept_new=defaults.accept_new or str(opts.get("stricthostkeychecking", "")).lower() == "accept-new",
        keepalive=keepalive,
        host_key_alias=alias or None,
        connect_timeout=timeout,
        keepalive_count=keepalive_count,
    )
    jump_spec, command = opts.get("proxyjump"), opts.get("proxycommand")
    if "proxyjump" in opts and "proxycommand" in opts:
        # Both set: the first one obtained wins (ssh_config(5)), `none` too (paramiko keeps the
        # key with the value None for `ProxyCommand none`).
        keys = list(opts)
        if keys.index("proxyjump") < keys.index("proxycommand"):
            command = None
        else:
            jump_spec = None
    jump = [j for j in str(jump_spec or "").split(",") if j.strip()]
    if jump and jump[0].strip().lower() == "none":
        jump = []
    if command and command.strip().lower() == "none":
        command = None
    return hop, jump, command


def route(host: str, defaults: Defaults, config: paramiko.SSHConfig | None = None,
          _depth: int = 0) -> list[Hop]:
    """The hops from here to `host` (an ssh-config alias or a host name): jump hosts first.

    Like OpenSSH's ProxyJump: the first jump host is itself looked up in full (its own ProxyJump
    or ProxyCommand applies); the later ones are reached through the previous hop.
    """
    if _depth > MAX_JUMP_DEPTH:
        raise ConfigError(f"ProxyJump for {host} nests deeper than {MAX_JUMP_DEPTH} hops (a loop?)")
    config = config if config is not None else load()
    target, jumps, command = _hop(config, host, user=None, port=None, defaults=defaults, target=True)
    if not jumps:
        return [replace(target, proxy_command=command) if command else target]
    hops: list[Hop] = []
    for i, spec in enumerate(jumps):
        user, name, port = parse_jump(spec)
        if i == 0:
            first = route(name, replace(defaults, port=None, explicit=False), config, _depth + 1)
            if user or port:
                first[-1] = replace(first[-1], user=user or first[-1].user, port=port or first[-1].port)
            hops += first
        else:
            hop, _, _ = _hop(config, name, user=user, port=port, defaults=defaults, target=False)
            hops.append(hop)
    return [*hops, target]


def describe(hops: Sequence[Hop]) -> str:
    return " -> ".join(f"{h.user}@{h.hostname}:{h.port}" for h in hops)
