"""Loopback TCP servers that stand in for a notebook behind hpcnb.tunnel.Tunnel in unit tests."""

from __future__ import annotations

import hashlib
import socketserver
import threading
import time
from collections.abc import Iterator


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class ShaAfterEof(socketserver.BaseRequestHandler):
    """Hashes everything until EOF, then answers the hex digest."""

    delay_s = 0.0

    def handle(self) -> None:
        time.sleep(self.delay_s)
        digest = hashlib.sha256()
        while data := self.request.recv(65536):
            digest.update(data)
        self.request.sendall(digest.hexdigest().encode())


class SlowShaAfterEof(ShaAfterEof):
    """Reads nothing for a second first: its socket fills up."""

    delay_s = 1.0


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def serve(handler: type[socketserver.BaseRequestHandler]) -> Iterator[int]:
    """A server on 127.0.0.1 (a free port) for as long as the generator is not closed: its port."""
    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
