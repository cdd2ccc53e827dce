"""Asking the user for a login answer (a TOTP code, a password, a key's passphrase): no paramiko.

Used by hpcnb.ssh.auth inside a command, and by a command answering for its keeper (hpcnb.keeper),
which has no terminal of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from hpcnb.errors import AuthenticationFailed

ASKPASS_ENV = "HPCNB_ASKPASS"


@dataclass(frozen=True)
class Prompt:
    """One question from a server (or for a key's passphrase), as it should be shown."""

    host: str
    user: str
    text: str
    echo: bool
    title: str = ""
    instructions: str = ""


PromptHandler = Callable[[Prompt], str]


def askpass_or_terminal(prompt: Prompt) -> str:
    """$HPCNB_ASKPASS PROMPT (its first output line), else the terminal (getpass when echo is off)."""
    program = os.environ.get(ASKPASS_ENV)
    if program:
        env = {**os.environ, "HPCNB_ASKPASS_ECHO": "1" if prompt.echo else "0",
               "HPCNB_ASKPASS_HOST": prompt.host}
        try:
            proc = subprocess.run([program, prompt.text], capture_output=True, text=True, env=env,
                                  timeout=300, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AuthenticationFailed(f"{ASKPASS_ENV} program {program!r} failed: {exc}") from exc
        if proc.returncode != 0:
            raise AuthenticationFailed(f"{ASKPASS_ENV} program {program!r} exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-200:]}")
        return proc.stdout.splitlines()[0] if proc.stdout else ""
    try:
        tty = open("/dev/tty", "r+", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError:
        raise AuthenticationFailed(
            f"{prompt.user}@{prompt.host} asks {prompt.text.strip()!r} but there is no terminal to answer",
            hint=f"run hpcnb in a terminal, or set {ASKPASS_ENV} to a program that prints the answer",
        ) from None
    with tty:
        for line in (prompt.title, prompt.instructions):
            if line.strip():
                tty.write(line.strip() + "\n")
        tty.flush()
        if prompt.echo:
            tty.write(prompt.text)
            tty.flush()
            return tty.readline().rstrip("\n")
    import getpass

    return getpass.getpass(prompt.text, stream=sys.stderr)
