"""A keeper's side of one client connection, and who answers a login prompt.

A prompt (a TOTP code after the connection dropped) goes to an hpcnb command that is waiting on the
keeper: the one whose request needs the login, else the newest one holding a tunnel open (its
terminal, or its HPCNB_ASKPASS), else the keeper's own HPCNB_ASKPASS. A desktop notification says
a login is wanted. Answers pass straight to the SSH login and are not kept.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import asdict
from typing import Any

from hpcnb import desktop as notify
from hpcnb.errors import AuthenticationFailed
from hpcnb.keeper import wire
from hpcnb.prompts import Prompt, PromptHandler, askpass_or_terminal

ANSWER_TIMEOUT_S = 300.0  # a user fetching their phone


class LineClosed(Exception):
    """The command at the other end of a line went away (not an error of the request)."""


class ClientLine:
    """One connected hpcnb command. `reader`: another thread reads this connection (a tunnel's
    line) and hands answers over through put_answer(); otherwise ask() reads them itself."""

    def __init__(self, conn: wire.Conn, *, can_prompt: bool) -> None:
        self.conn = conn
        self.can_prompt = can_prompt
        self.reader = False
        self._send_lock = threading.Lock()
        self._answers: queue.Queue[dict[str, Any]] = queue.Queue()

    def send(self, message: dict[str, Any]) -> None:
        try:
            with self._send_lock:
                wire.send(self.conn, message)
        except (EOFError, OSError) as exc:
            raise LineClosed(str(exc)) from exc

    def put_answer(self, message: dict[str, Any]) -> None:
        self._answers.put(message)

    def ask(self, prompt: Prompt) -> str:
        self.send({"prompt": asdict(prompt)})
        if self.reader:
            try:
                answer = self._answers.get(timeout=ANSWER_TIMEOUT_S)
            except queue.Empty:
                raise AuthenticationFailed("no answer to the login prompt in time") from None
        else:
            answer = wire.recv(self.conn, timeout=ANSWER_TIMEOUT_S)
        wire.raise_error(answer)  # the command could not ask (no terminal): its error
        return str(answer.get("answer", ""))


class PromptRelay:
    """Routes a login's prompts to a waiting command (see the module docstring)."""

    def __init__(self, cluster: str, *, notify: bool = True) -> None:
        self.cluster, self.notify = cluster, notify
        self._holders: list[ClientLine] = []  # lines holding a tunnel open, oldest first
        self._lock = threading.Lock()

    def hold(self, line: ClientLine) -> None:
        with self._lock:
            self._holders.append(line)

    def release(self, line: ClientLine) -> None:
        with self._lock:
            if line in self._holders:
                self._holders.remove(line)

    def handler(self, asker: ClientLine | None, *, again: bool) -> PromptHandler:
        """The prompt handler for one login; `again`: after a drop (the user did not just type a
        command, so tell them on the desktop too)."""
        notified = False

        def ask(prompt: Prompt) -> str:
            nonlocal notified
            if again and not notified and self.notify:
                notified = True
                notify.notify("hpcnb: log in again",
                              f"the connection to {self.cluster} dropped: {prompt.text.strip()}")
            with self._lock:
                candidates = [asker, *reversed(self._holders)]
            for line in candidates:
                if line is None or not line.can_prompt:
                    continue
                try:
                    return line.ask(prompt)
                except (LineClosed, EOFError, OSError):
                    continue  # that command went away: the next one
            return askpass_or_terminal(prompt)  # the keeper has no terminal: HPCNB_ASKPASS or a clear error

        return ask
