"""The command lines both SSH backends send, under hostile values (issue: "values never reach a
shell unquoted"). The far end's login shell gets one string: hpcnb.remote.shell_command, the one
quoting point of the paramiko backend (hpcnb.ssh) and the OpenSSH one (hpcnb.openssh). Whatever
the words, a POSIX shell must give back exactly those words and run nothing else. The OpenSSH
backend's ProxyCommand (run by ssh through the local shell, with %-tokens) must too.
"""

from __future__ import annotations

import re
import subprocess
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from hpcnb.openssh import options as o
from hpcnb.openssh.forward import proxy_command
from hpcnb.remote import shell_command

# Anything a word can hold (no NUL: argv cannot carry it), weighted towards shell syntax.
SHELLISH = st.sampled_from([*"'\"`$(){};|&<>*?[]~#!%\\\n\t -=", "$(touch /tmp/pwned)", "%h", "%%"])
WORD = st.lists(st.one_of(SHELLISH, st.characters(blacklist_characters="\x00",
                                                    blacklist_categories=("Cs",))),
                max_size=12).map("".join)
PRINT_WORDS = ["sh", "-c", 'for a in "$@"; do printf "%s\\0" "$a"; done', "x"]


def _words_after_shell(command: str) -> list[str]:
    """What a login shell at the far end makes of `command` (sh -c, as sshd runs it)."""
    out = subprocess.run(["sh", "-c", command], capture_output=True, check=True).stdout
    return out.decode("utf-8", "surrogateescape").split("\0")[:-1]


@settings(max_examples=300, deadline=None)
@given(st.lists(WORD, min_size=1, max_size=5))
def test_a_remote_command_is_the_same_words_at_the_far_end(words: list[str]) -> None:
    command = shell_command([*PRINT_WORDS, *words])
    assert _words_after_shell(command) == words


@settings(max_examples=200, deadline=None)
@given(WORD, WORD, WORD)
def test_the_proxy_command_is_the_same_words_for_the_local_shell(ssh: str, identity: str, host: str) -> None:
    """ssh expands %-tokens in ProxyCommand, then runs it with the user's shell: every other % is
    doubled, every word quoted; so the shell sees exactly hpcnb's words with %h:%p filled in."""
    cfg = SimpleNamespace(user="u", port=None, identity_file=identity or None, known_hosts=None)
    options = o.base_options(cfg, {}, o.Control("none"), accept_new=False)
    remote = SimpleNamespace(ssh=ssh or "ssh", options=options, host=host or "h")
    line = proxy_command(remote)
    # ssh's percent expansion, left to right (ssh_config(5) TOKENS): %% -> %, %h and %p filled in.
    expanded = re.sub(r"%(.)", lambda m: {"%": "%", "h": "node01", "p": "22"}[m.group(1)], line)
    words = _words_after_shell(f"set -- {expanded}; " + 'for a in "$@"; do printf "%s\\0" "$a"; done')
    assert words == [remote.ssh, *options, "-W", "node01:22", "--", remote.host]


@given(st.booleans(), st.sampled_from(["no", "off", "yes", "ask", "accept-new", "NO"]))
def test_host_keys_are_never_unchecked(accept_new: bool, user_mode: str) -> None:
    cfg = SimpleNamespace(user=None, port=None, identity_file=None, known_hosts="/k h/known")
    opts = o.base_options(cfg, {"stricthostkeychecking": user_mode}, o.Control("none"), accept_new=accept_new)
    joined = " ".join(opts).lower()
    assert "stricthostkeychecking=no" not in joined and "/dev/null" not in joined
    expected = "accept-new" if accept_new or user_mode == "accept-new" else "yes"
    assert f"StrictHostKeyChecking={expected}" in opts
