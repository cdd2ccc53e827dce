"""Open the notebook URL in the user's browser: Linux, macOS, Windows and WSL.

Never blocks and never fails the command: open_url() returns at once (the opener runs detached or
on a daemon thread) and says in words what it did, or why it did not, so the CLI can print the
URL for the user to open. On Linux without a display (an SSH session) nothing is started, because
Python's webbrowser would fall back to a text browser (lynx, w3m) that takes over the terminal.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

Popen = Callable[..., object]


def is_wsl(proc_version: Path = Path("/proc/version")) -> bool:
    """Windows Subsystem for Linux: the kernel's version string names Microsoft."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return "microsoft" in proc_version.read_text(errors="replace").lower()
    except OSError:
        return False


def _cmd_escape(url: str) -> str:
    """cmd.exe metacharacters in a URL (& | < > ^ %) escaped with ^ for `start`."""
    return "".join("^" + c if c in "&|<>^%" else c for c in url)


def wsl_argv(url: str, which: Callable[[str], str | None] = shutil.which) -> list[str] | None:
    """How to open a URL in the Windows browser from WSL, best first; None if nothing is found."""
    if which("wslview"):
        return ["wslview", url]
    if which("cmd.exe"):
        return ["cmd.exe", "/c", "start", '""', _cmd_escape(url)]
    if which("powershell.exe"):
        return ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command", "Start-Process", f"'{url}'"]
    return None


def _spawn(argv: Sequence[str], popen: Popen) -> None:
    kwargs: dict[str, object] = {
        "stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
    }
    if os.name == "posix":
        kwargs["start_new_session"] = True  # Ctrl-C in our terminal must not reach the browser
    popen(list(argv), **kwargs)


def _has_display(env: dict[str, str] | os._Environ[str]) -> bool:
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or env.get("BROWSER"))


def open_url(url: str, *, popen: Popen = subprocess.Popen, env: dict[str, str] | None = None,
             platform: str | None = None, wsl: bool | None = None,
             which: Callable[[str], str | None] = shutil.which) -> tuple[bool, str]:
    """Start opening `url`; returns (started, how or why not). Never raises, never waits."""
    environ = os.environ if env is None else env
    platform = platform or sys.platform
    try:
        if platform.startswith("linux") and (is_wsl() if wsl is None else wsl):
            argv = wsl_argv(url, which)
            if argv is None:
                return False, "WSL without wslview, cmd.exe or powershell.exe on PATH"
            _spawn(argv, popen)
            return True, argv[0]
        if (platform.startswith("linux") or "bsd" in platform) and not _has_display(environ):
            return False, "no display (DISPLAY/WAYLAND_DISPLAY unset; set BROWSER to choose one)"
        # macOS (open), Windows (os.startfile), Linux with a display (xdg-open, $BROWSER, ...):
        # webbrowser knows them; it may wait for the browser, so it runs on a daemon thread.
        import webbrowser

        threading.Thread(target=_quiet_open, args=(webbrowser, url), daemon=True).start()
        return True, "webbrowser"
    except OSError as exc:
        return False, f"could not start a browser: {exc.strerror or exc}"


def _quiet_open(webbrowser, url: str) -> None:
    with contextlib.suppress(Exception):  # a browser that fails must not fail the command
        webbrowser.open(url, new=2)
