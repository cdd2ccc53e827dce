"""Sockets, the part the tunnel's local end and the SSH layer share: TCP with Nagle off, and how
much to take from a paramiko channel per read.

Standard library only (the `local` backend's tunnel uses this without any SSH).
"""

from __future__ import annotations

import socket

# paramiko's Channel.recv(n) returns what is buffered, up to n, without allocating n. A partial
# read deletes from the front of its buffer (BufferedPipe: `del array[:n]`, O(buffered)), which
# with a 16 MiB window made downloads 2-4x slower; asking for more than any window always takes
# the whole buffer. Used by the tunnel's pumps and hpcnb.pump.
CHANNEL_READ = 64 * 1024 * 1024


def tcp_connect(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection with TCP_NODELAY. Raises OSError as socket.create_connection does."""
    return no_delay(socket.create_connection((host, int(port)), timeout=timeout))


def no_delay(sock: socket.socket, *, keepalive: bool = False) -> socket.socket:
    """TCP_NODELAY on (Nagle's algorithm alone adds ~40 ms to a small write that waits for a
    delayed ACK), and SO_KEEPALIVE with keepalive; the socket, for chaining."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if keepalive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock
