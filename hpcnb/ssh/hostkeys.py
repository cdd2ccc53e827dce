"""The servers' SSH keys: known_hosts checking and accept-new (our own keys: hpcnb.auth).

known_hosts: hashed, wildcard and bracketed host:port entries, @revoked; @cert-authority skipped.

Semantics follow sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT":
https://man.openbsd.org/sshd.8#SSH_KNOWN_HOSTS_FILE_FORMAT
A key is accepted when some file lists it for one of the names; a *different* key of the same type
for a name is a changed key and is never accepted; an unknown host can be accepted only on request
(like OpenSSH's StrictHostKeyChecking=accept-new), which appends a line to the first file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.pkey import UnknownKeyType

from hpcnb.errors import HostKeyError

SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
USER_KNOWN_HOSTS = "~/.ssh/known_hosts"

# Host key algorithm names to offer first when the key type is already known (RSA keys are stored
# as "ssh-rsa" but negotiated with the SHA-2 signature algorithms, RFC 8332).
_ALGORITHMS_FOR_TYPE = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}


def default_known_hosts_files() -> list[str]:
    """The files OpenSSH reads by default: the user's, then the system-wide one."""
    return [str(Path(USER_KNOWN_HOSTS).expanduser()), SYSTEM_KNOWN_HOSTS]


def host_key_name(host: str, port: int) -> str:
    """The name a host is recorded under: `host`, or `[host]:port` when the port is not 22."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style fingerprint: `SHA256:` + unpadded base64 of the key blob's SHA-256."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def key_label(key: paramiko.PKey) -> str:
    """ED25519 / ECDSA / RSA, as OpenSSH prints it."""
    name = key.get_name()
    if "ed25519" in name:
        return "ED25519"
    if name.startswith("ecdsa"):
        return "ECDSA"
    if "rsa" in name:
        return "RSA"
    return name


@dataclass(frozen=True)
class KnownHost:
    """One usable known_hosts line: where it came from, its patterns and key."""

    path: str
    lineno: int
    patterns: tuple[str, ...]
    key: paramiko.PKey
    revoked: bool = False

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"


def _hashed_matches(name: str, pattern: str) -> bool:
    # |1|base64(salt)|base64(HMAC-SHA1(salt, name))
    parts = pattern.split("|")
    if len(parts) != 4:
        return False
    try:
        salt = base64.b64decode(parts[2])
        want = base64.b64decode(parts[3])
    except binascii.Error:
        return False
    got = hmac.new(salt, name.encode("utf-8"), hashlib.sha1).digest()
    return hmac.compare_digest(got, want)


def _glob(name: str, pattern: str) -> bool:
    """OpenSSH patterns: `*` and `?` only (so `[host]:port` is literal), case-insensitive."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    return re.fullmatch(regex, name.lower()) is not None


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """A name matches when a pattern matches it and no negated (`!`) pattern does."""
    hit = False
    for pattern in patterns:
        if pattern.startswith("|1|"):
            hit = hit or _hashed_matches(name, pattern)
        elif pattern.startswith("!"):
            if _glob(name, pattern[1:]):
                return False
        elif _glob(name, pattern):
            hit = True
    return hit


def _parse_line(path: str, lineno: int, line: str) -> KnownHost | None:
    fields = line.split()
    revoked = False
    if fields and fields[0].startswith("@"):
        if fields[0] != "@revoked":
            return None  # @cert-authority: host certificates are not supported
        revoked = True
        fields = fields[1:]
    if len(fields) < 3:
        return None
    patterns, key_type, blob = fields[0], fields[1], fields[2]
    try:
        key = paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
    except (binascii.Error, ValueError, paramiko.SSHException, UnknownKeyType):
        return None  # unknown key type (ssh-dss, sk-*) or damaged line: OpenSSH skips it too
    return KnownHost(path, lineno, tuple(patterns.split(",")), key, revoked)


def load(paths: Sequence[str]) -> list[KnownHost]:
    """Every parseable line of the files that exist (a missing file is an empty file)."""
    entries: list[KnownHost] = []
    for raw in paths:
        path = str(Path(raw).expanduser())
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise HostKeyError(f"cannot read known_hosts file {path}: {exc.strerror}") from exc
        for lineno, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                entry = _parse_line(path, lineno, stripped)
                if entry is not None:
                    entries.append(entry)
    return entries


class KnownHosts:
    """The known_hosts files for one connection; the first file is where new keys are added."""

    def __init__(self, paths: Sequence[str] | None = None) -> None:
        self.paths = [str(Path(p).expanduser()) for p in (paths or default_known_hosts_files())]
        self.entries = load(self.paths)

    def for_names(self, names: Sequence[str]) -> list[KnownHost]:
        return [e for e in self.entries if any(_matches(n, e.patterns) for n in names)]

    def preferred_algorithms(self, names: Sequence[str], offered: Sequence[str]) -> list[str]:
        """Host key algorithms with the already-known types first (what OpenSSH does too), so a
        host known by its ECDSA key is not asked for an ED25519 key we would call unknown."""
        known: list[str] = []
        for entry in self.for_names(names):
            if entry.revoked:
                continue
            kind = entry.key.get_name()
            for alg in (*_ALGORITHMS_FOR_TYPE.get(kind, ()), kind):
                if alg in offered and alg not in known:
                    known.append(alg)
        return known + [a for a in offered if a not in known]

    def verify(self, names: Sequence[str], key: paramiko.PKey, *, accept_new: bool = False,
               reached: str | None = None, several_nodes: bool = False) -> str | None:
        """Accept `key` for `names` or raise HostKeyError. Returns the file a new key was added
        to (accept_new), else None. `reached`: the address that answered, named in the errors when
        the name is not that address; `several_nodes`: the name has several addresses (login nodes
        behind one name), each of which may have a key of its own."""
        label, fp, shown = key_label(key), fingerprint(key), names[0]
        where = f"{shown} (reached at {reached})" if reached and reached not in shown else shown
        entries = self.for_names(names)
        for entry in entries:
            if entry.revoked and entry.key == key:
                raise HostKeyError(
                    f"the {label} host key of {where} ({fp}) is marked @revoked in {entry.where}"
                )
        if any(e.key == key and not e.revoked for e in entries):
            return None
        changed = [e for e in entries if not e.revoked and e.key.get_name() == key.get_name()]
        if changed:
            first = changed[0]
            other_node = f", or another of the login nodes behind the name {shown}" if several_nodes else ""
            raise HostKeyError(
                f"HOST KEY CHANGED for {where}: it presented {label} key {fp}, but "
                f"{first.where} has {fingerprint(first.key)}",
                hint=f"this can be an attack (or a reinstalled host{other_node}); confirm the new "
                "fingerprint with your admins, then remove the old line, e.g. ssh-keygen -R "
                f"'{shown}' -f {first.path}" + (
                    ", or for another login node add a line for this key beside it" if other_node else ""),
            )
        if not accept_new:
            raise HostKeyError(
                f"unknown host key for {where}: {label} {fp} (not in {', '.join(self.paths)})",
                hint="compare the fingerprint with your site's documentation, then accept it "
                f"with --accept-new-host-key, which adds it to {self.paths[0]}",
            )
        self.add(names, key)
        return self.paths[0]

    def add(self, names: Sequence[str], key: paramiko.PKey) -> None:
        """Append `names keytype base64` to the first file (0600, directory 0700 if created)."""
        path = Path(self.paths[0])
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = f"{','.join(names)} {key.get_name()} {key.get_base64()}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            if fh.tell() > 0 and not path.read_bytes().endswith(b"\n"):
                fh.write("\n")
            fh.write(line)
        self.entries.append(KnownHost(str(path), -1, tuple(names), key))
