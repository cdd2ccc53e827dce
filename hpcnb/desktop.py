"""Desktop notifications: a queued notebook is ready, the walltime is near, a keeper needs a login
again. Best effort only.

Linux: notify-send (libnotify, over D-Bus); macOS: osascript's `display notification`; Windows: a
toast through PowerShell's WinRT bindings. $HPCNB_NOTIFY_COMMAND, when set, is run instead (its
words, then the title and the body as two more arguments): for tests, or a phone push script. A
missing tool, no desktop session, or a failure is ignored: a notification never fails or slows the
command (it runs in a thread of its own) or the keeper.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence

_log = logging.getLogger("hpcnb.desktop")
COMMAND_ENV = "HPCNB_NOTIFY_COMMAND"

# PowerShell: the WinRT toast API, no module to install (ToastNotificationManager, Windows 10+).
_TOAST = (
    "[Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications, "
    "ContentType = WindowsRuntime] > $null; "
    "$t = [Windows.UI.Notifications.ToastTemplateType]::ToastText02; "
    "$x = [Windows.UI.Notifications.ToastNotificationManager]::GetTemplateContent($t); "
    "$n = $x.GetElementsByTagName('text'); "
    "$n.Item(0).AppendChild($x.CreateTextNode($env:HPCNB_TITLE)) > $null; "
    "$n.Item(1).AppendChild($x.CreateTextNode($env:HPCNB_BODY)) > $null; "
    "[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier('hpcnb')"
    ".Show([Windows.UI.Notifications.ToastNotification]::new($x))"
)


def command(title: str, body: str, platform: str = sys.platform) -> tuple[list[str], dict[str, str]] | None:
    """The argv (and extra environment) that shows a notification here, or None.
    Text goes in as data (argv words, environment), never into a script's source."""
    override = os.environ.get(COMMAND_ENV)
    if override:
        try:
            return [*shlex.split(override), title, body], {}
        except ValueError:  # unbalanced quotes: no notification, as with a missing tool
            return None
    if platform == "darwin":
        if not shutil.which("osascript"):
            return None
        script = "on run argv\ndisplay notification (item 2 of argv) with title (item 1 of argv)\nend run"
        return ["osascript", "-e", script, title, body], {}
    if platform == "win32":
        if not shutil.which("powershell"):
            return None
        return ["powershell", "-NoProfile", "-NonInteractive", "-Command", _TOAST], {
            "HPCNB_TITLE": title, "HPCNB_BODY": body}
    if not shutil.which("notify-send"):
        return None
    return ["notify-send", "--app-name=hpcnb", title, body], {}


def notify(title: str, body: str) -> None:
    """Show it in the background; never raises, never waits."""
    found = command(title, body)
    if found is None:
        return
    argv, extra = found
    threading.Thread(target=_run, args=(argv, extra), daemon=True).start()


def _run(argv: Sequence[str], extra: dict[str, str]) -> None:
    try:
        subprocess.run(list(argv), env={**os.environ, **extra}, timeout=10, check=False,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        _log.debug("desktop notification failed: %s", exc)
