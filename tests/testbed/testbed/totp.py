#!/usr/bin/env python3
"""TOTP codes for the testbed gateway (RFC 6238, HMAC-SHA1, 6 digits, TOTP_STEP-second steps).

pam_oath refuses a code whose time step is not newer than the last one it accepted (replay), and
tests log in several times within one step; so every code handed out uses a fresh step: the next
one after the last used (recorded per user, under a lock), or now, whichever is later. pam_oath's
window (conffiles.TOTP_WINDOW steps) accepts steps a little ahead of the clock.

Also an askpass program for hpcnb (HPCNB_ASKPASS): `totp.py PROMPT` prints the answer.
    HPCNB_TB_PROMPT_LOG   file to append each prompt to (tests count them)
    HPCNB_TB_TOTP_WRONG   "1": answer a wrong code
    HPCNB_TB_PASSPHRASE   the answer to a key passphrase prompt
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import re
import struct
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a program: make `testbed` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.conffiles import TOTP_STEP
from testbed.topology import TOTP_SECRETS, USERS


def code_at(secret_hex: str, step: int) -> str:
    digest = hmac.new(bytes.fromhex(secret_hex), struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def secret(user: str) -> str:
    return (TOTP_SECRETS / user).read_text().strip()


def next_code(user: str = USERS[0]) -> str:
    """A valid code for `user` on a step never handed out before."""
    state = TOTP_SECRETS / f"{user}.last"
    with open(TOTP_SECRETS / f"{user}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            last = int(state.read_text())
        except (FileNotFoundError, ValueError):
            last = 0
        step = max(int(time.time()) // TOTP_STEP, last + 1)
        state.write_text(f"{step}\n")
    return code_at(secret(user), step)


def wrong_code(user: str = USERS[0]) -> str:
    """A code pam_oath can never accept: one for a step far in the past."""
    return code_at(secret(user), int(time.time()) // TOTP_STEP - 100_000)


def answer(prompt: str) -> str:
    log = os.environ.get("HPCNB_TB_PROMPT_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(prompt.replace("\n", " ") + "\n")
    if "passphrase" in prompt.lower():
        return os.environ.get("HPCNB_TB_PASSPHRASE", "")
    match = re.search(r"for `([^']+)'", prompt)  # pam_oath: "One-time password (OATH) for `USER': "
    user = match.group(1) if match else USERS[0]
    return wrong_code(user) if os.environ.get("HPCNB_TB_TOTP_WRONG") == "1" else next_code(user)


if __name__ == "__main__":
    print(answer(sys.argv[1] if len(sys.argv) > 1 else ""))
