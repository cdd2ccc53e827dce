"""hpcnb.attach with the `local` far end: a notebook stand-in on loopback (a real HTTP server), the
tunnel checked before its URL is given, held until told to stop, and everything closed after."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from urllib.request import Request, urlopen

import pytest

from hpcnb import attach
from hpcnb.errors import HpcnbError
from hpcnb.handshake import Handshake
from hpcnb.remote import LocalRemote

TOKEN = "t0k/en+"


class _Jupyterish(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.headers.get("Authorization") == f"token {TOKEN}"
        body = b'{"started": "now"}' if ok else b"{}"
        self.send_response(200 if ok else 403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def notebook_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Jupyterish)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _handshake(port: int) -> Handshake:
    return Handshake(job_id="7", host="127.0.0.1", port=port, socket=None, token=TOKEN,
                     tunnel="direct", base_url="/user/x/")


def test_tunnel_answers_then_holds_until_stopped(notebook_port: int) -> None:
    watched: list[object] = []

    def watch(stop: threading.Event, remote: object) -> None:
        watched.append(remote())  # type: ignore[operator]
        stop.wait(5)

    remote = LocalRemote()
    far = attach.local_far(_handshake(notebook_port), remote)
    with attach.tunnel(_handshake(notebook_port), far, port=None, notify=print, watch=watch) as opened:
        assert opened.url == f"http://127.0.0.1:{opened.local_port}/user/x/lab?token=t0k%2Fen%2B"
        request = Request(f"http://127.0.0.1:{opened.local_port}/user/x/api/status",
                          headers={"Authorization": f"token {TOKEN}"})
        with urlopen(request, timeout=5) as page:
            assert page.status == 200
        stop = threading.Event()
        stop.set()
        opened.hold(stop)
    assert watched == [remote]
    with pytest.raises(OSError):  # the listener is gone
        urlopen(f"http://127.0.0.1:{opened.local_port}/", timeout=2)


def test_a_notebook_that_does_not_answer_is_an_error_not_a_url(
    notebook_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attach, "ANSWER_TIMEOUT_S", 0.5)
    wrong = Handshake(job_id="7", host="127.0.0.1", port=notebook_port, socket=None, token="wrong",
                      tunnel="direct")
    far = attach.local_far(wrong, LocalRemote())
    with pytest.raises(HpcnbError, match="did not answer through the tunnel: HTTP 403"), \
            attach.tunnel(wrong, far, port=None, notify=print, watch=lambda s, r: None):
        pass


def test_check_answers_gives_up_after_its_timeout() -> None:
    with pytest.raises(HpcnbError, match="did not answer"):
        attach.check_answers(1, _handshake(1), timeout=0.3)
