"""Authenticating one SSH transport: keys (identity files, ssh-agent), then keyboard-interactive.

Order, as OpenSSH's: identity files that need no passphrase, then the agent's keys (only those of
the configured identity files when IdentitiesOnly), then passphrase-protected identity files (the
passphrase is asked once per file and process). A server that wants a second factor
(`AuthenticationMethods publickey,keyboard-interactive`, RFC 4252 partial success) or only
keyboard-interactive (TOTP, Duo) gets its prompts answered by a PromptHandler: by default the
program named by $HPCNB_ASKPASS, else the terminal. A rejected answer is not retried: one prompt
per host per command. Every failure here is AuthenticationFailed (exit 4), which is never
retried (hpcnb.ssh.reconnect).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from hpcnb.errors import AuthenticationFailed
from hpcnb.prompts import Prompt, PromptHandler, askpass_or_terminal
from hpcnb.ssh.hostkeys import fingerprint, key_label

# What OpenSSH tries when no IdentityFile is configured (ssh(1) -i).
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
KBD = "keyboard-interactive"


@dataclass
class Credentials:
    """How to prove who we are; shared by every hop of one command (passphrases asked once)."""

    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    allow_agent: bool = True
    prompt: PromptHandler | None = askpass_or_terminal  # None: keys only (node hops)
    _passphrases: dict[str, str] = field(default_factory=dict, repr=False)

    def keys_only(self) -> Credentials:
        return Credentials(self.identity_files, self.identities_only, self.allow_agent, None,
                           self._passphrases)

    def passphrases(self) -> dict[str, str]:
        """The passphrases asked so far, by key file: what a node hop's own process is handed
        (hpcnb.ssh.hopchild), so it never asks again."""
        return dict(self._passphrases)


def _load(path: Path, passphrase: str | None = None) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path, None if passphrase is None else passphrase.encode())
    except FileNotFoundError as exc:
        raise AuthenticationFailed(f"identity file {path} does not exist") from exc
    except paramiko.PasswordRequiredException:
        raise
    except TypeError as exc:
        # paramiko >= 3 loads keys with `cryptography`, which says "Key is password-protected, but
        # password was not provided." as a TypeError, not paramiko's PasswordRequiredException.
        if passphrase is None:
            raise paramiko.PasswordRequiredException(str(exc)) from exc
        raise AuthenticationFailed(f"cannot read identity file {path}: wrong passphrase?") from exc
    except (paramiko.SSHException, ValueError, OSError) as exc:
        if passphrase is not None:
            raise AuthenticationFailed(f"cannot read identity file {path}: wrong passphrase?") from exc
        raise AuthenticationFailed(f"cannot read identity file {path}: {exc}") from exc


def _public_blob(path: Path) -> bytes | None:
    """The public key of an identity file, from its .pub (to pick agent keys without a passphrase)."""
    with contextlib.suppress(OSError, ValueError, paramiko.SSHException, IndexError):
        import base64

        return base64.b64decode(path.with_name(path.name + ".pub").read_text().split()[1])
    return None


class _Authenticator:
    def __init__(self, transport: paramiko.Transport, host: str, user: str, creds: Credentials):
        self.transport, self.host, self.user, self.creds = transport, host, user, creds
        self.tried: list[str] = []
        self.answered = False  # a keyboard-interactive round was answered

    def _files(self) -> list[Path]:
        if self.creds.identity_files:
            return [Path(p).expanduser() for p in dict.fromkeys(self.creds.identity_files)]
        return [p for p in (Path(c).expanduser() for c in DEFAULT_IDENTITIES) if p.exists()]

    def _ask(self, text: str, echo: bool = False, title: str = "", instructions: str = "") -> str:
        handler = self.creds.prompt
        if handler is None:
            raise AuthenticationFailed(
                f"{self.user}@{self.host} asks {text.strip()!r}, but this hop takes keys only",
                hint="SSH to compute nodes must work with your key (or ssh-agent)")
        return handler(Prompt(self.host, self.user, text, echo, title, instructions))

    def _kbd_handler(self, title: str, instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str]:
        if not prompts:
            return []  # PAM often sends an empty round (instructions only)
        if self.answered:
            # A second round after an answer means the first was refused: never loop on a code.
            raise paramiko.AuthenticationException("the server asked again")
        self.answered = True
        return [self._ask(text, echo, title, instructions) for text, echo in prompts]

    def keyboard_interactive(self) -> None:
        try:
            left = self.transport.auth_interactive(self.user, self._kbd_handler)
        except paramiko.BadAuthenticationType as exc:
            raise self._failed(f"the server does not accept {KBD} (it allows "
                               f"{', '.join(exc.allowed_types)})") from exc
        except paramiko.AuthenticationException as exc:
            raise AuthenticationFailed(
                f"authentication failed for {self.user}@{self.host}: the answer to its "
                f"{KBD} prompt was refused" + (f" ({exc})" if str(exc) else ""),
                hint="check the code (a TOTP code is valid for its time step only, once) and try again",
            ) from exc
        if not self.transport.is_authenticated():
            raise self._failed(f"still not authenticated after {KBD} (the server wants {', '.join(left)})")

    def _try_key(self, source: str, key: paramiko.PKey) -> list[str] | None:
        """None: refused; else the methods the server still wants ([] when done)."""
        self.tried.append(f"{source} ({key_label(key)} {fingerprint(key)})")
        try:
            return self.transport.auth_publickey(self.user, key)
        except paramiko.BadAuthenticationType as exc:
            if KBD in exc.allowed_types:
                self.keyboard_interactive()
                return []
            raise self._failed(f"the server does not accept public keys (it allows: "
                               f"{', '.join(exc.allowed_types)})") from exc
        except paramiko.AuthenticationException:
            return None

    def _failed(self, why: str) -> AuthenticationFailed:
        return AuthenticationFailed(f"authentication failed for {self.user}@{self.host}: {why}")

    def _candidates(self):
        """(source, key) in OpenSSH's order; passphrase-protected files last, loaded on demand."""
        files = self._files()
        locked: list[Path] = []
        for path in files:
            try:
                yield str(path), _load(path)
            except paramiko.PasswordRequiredException:
                locked.append(path)
            except AuthenticationFailed:
                if self.creds.identity_files:
                    raise
        if self.creds.allow_agent:
            agent = paramiko.Agent()
            try:
                wanted = {b for b in (_public_blob(p) for p in files) if b}
                for key in agent.get_keys():
                    if not self.creds.identities_only or key.asbytes() in wanted:
                        yield "ssh-agent", key
            finally:
                agent.close()
        for path in locked:
            cache = self.creds._passphrases
            if str(path) not in cache:
                cache[str(path)] = self._ask(f"Enter passphrase for key '{path}': ")
            yield str(path), _load(path, cache[str(path)])

    def run(self) -> None:
        for source, key in self._candidates():
            left = self._try_key(source, key)
            if left is None:
                continue
            if self.transport.is_authenticated():
                return
            if KBD in left:  # partial success: the key was accepted, now the second factor
                self.keyboard_interactive()
                return
            if "publickey" not in left:
                raise self._failed(f"the key was accepted but the server also wants {', '.join(left)}")
        if self.transport.is_authenticated():
            return
        raise AuthenticationFailed(
            f"authentication failed for {self.user}@{self.host}: "
            + ("tried " + "; ".join(self.tried) if self.tried else "no identity file and no ssh-agent keys"),
            hint=f"add your public key to ~{self.user}/.ssh/authorized_keys on {self.host}, "
            "or set identity_file in the cluster config (or IdentityFile in ~/.ssh/config)",
        )


def authenticate(transport: paramiko.Transport, host: str, user: str, creds: Credentials) -> None:
    """Authenticate or raise AuthenticationFailed (exit 4) naming what was tried."""
    _Authenticator(transport, host, user, creds).run()
