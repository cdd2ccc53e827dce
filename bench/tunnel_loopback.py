"""Throughput of hpcnb's tunnel vs OpenSSH `ssh -L`, both to the same loopback sshd (needs root).

    python bench/tunnel_loopback.py [MiB]      (default 256)

Prints figures; asserts nothing. A source server on 127.0.0.1 sends MiB bytes per connection
(download, what a browser mostly does) or counts what it receives (upload); the client reads
through: a direct TCP connection (baseline), hpcnb.tunnel.Tunnel over SSHRemote.open_tcp
(threads), a single-threaded selector pump (the alternative design), and `ssh -L` with OpenSSH's
default cipher and with aes128-gcm. Also: the latency of 100 fresh connections (open, 1 byte
echoed, close), which is what a page load with many small requests feels.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "integration")]

from sshd_fixture import Sshd, free_port, running_sshd  # noqa: E402

from hpcnb.ssh import SSHRemote  # noqa: E402
from hpcnb.tunnel import Tunnel  # noqa: E402

CHUNK = b"\xa5" * (1 << 20)


def source_server() -> int:
    """A server whose first byte from the client picks: 'd'+uint32 send MiB, 'u' count, 'e' echo."""
    srv = socket.create_server(("127.0.0.1", 0), backlog=256)

    def handle(conn: socket.socket) -> None:
        with conn:
            mode = conn.recv(1)
            if mode == b"d":
                for _ in range(int.from_bytes(conn.recv(4), "big")):
                    conn.sendall(CHUNK)
            elif mode == b"u":
                total = 0
                while data := conn.recv(1 << 18):
                    total += len(data)
                conn.sendall(str(total).encode())
            else:
                conn.sendall(mode)

    def loop() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1]


def download(port: int, mib: int) -> float:
    """MiB/s reading mib MiB through 127.0.0.1:port."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.perf_counter()
        sock.sendall(b"d" + mib.to_bytes(4, "big"))
        want, got = mib << 20, 0
        while got < want and (data := sock.recv(1 << 18)):
            got += len(data)
        elapsed = time.perf_counter() - start
    assert got == want, (got, want)
    return mib / elapsed


def upload(port: int, mib: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.perf_counter()
        sock.sendall(b"u")
        for _ in range(mib):
            sock.sendall(CHUNK)
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(64)
        elapsed = time.perf_counter() - start
    assert int(answer) == mib << 20, answer
    return mib / elapsed


def latency_ms(port: int, n: int = 100) -> float:
    start = time.perf_counter()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"e")
            assert sock.recv(1) == b"e"
    return (time.perf_counter() - start) / n * 1000


def selector_pump(open_upstream: Callable[[], object]) -> tuple[int, Callable[[], None]]:
    """Alternative design: one thread, a selector over client sockets and channels."""
    listener = socket.create_server(("127.0.0.1", 0))
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for key, _ in sel.select(0.2):
                if key.data is None:
                    client, _ = listener.accept()
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    chan = open_upstream()
                    sel.register(client, selectors.EVENT_READ, chan)
                    sel.register(chan, selectors.EVENT_READ, client)
                    continue
                src, dst = key.fileobj, key.data
                size = 1 << 18 if isinstance(src, socket.socket) else 1 << 26
                data = src.recv(size)  # type: ignore[union-attr]
                if data:
                    dst.sendall(data)  # blocks the whole loop while the SSH window is full
                    continue
                sel.unregister(src)  # EOF: pass the half-close on
                dst.shutdown(socket.SHUT_WR)
                if not any(k.fileobj is dst for k in sel.get_map().values()):
                    src.close()  # type: ignore[union-attr]
                    dst.close()

    threading.Thread(target=loop, daemon=True).start()
    return listener.getsockname()[1], stop.set


@contextmanager
def ssh_l(sshd: Sshd, kh: Path, target: int, cipher: str | None) -> Iterator[int]:
    lport = free_port()
    argv = ["ssh", "-N", "-p", str(sshd.port), "-i", str(sshd.client_key)]
    argv += ["-o", f"UserKnownHostsFile={kh}", "-o", "StrictHostKeyChecking=yes"]
    argv += ["-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "IdentityAgent=none"]
    argv += ["-L", f"127.0.0.1:{lport}:127.0.0.1:{target}", f"{sshd.user}@127.0.0.1"]
    if cipher:
        argv[1:1] = ["-c", cipher]
    proc = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", lport), 0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("ssh -L did not come up") from None
                time.sleep(0.05)
        yield lport
    finally:
        proc.terminate()
        proc.wait(5)


def measure_all(port: int, mib: int) -> tuple[float, float, float]:
    download(port, 16)  # warm up
    # best of 3: the 2-core machine runs sshd, the source server and the client at once
    down = max(download(port, mib) for _ in range(3))
    up = max(upload(port, mib) for _ in range(3))
    return down, up, min(latency_ms(port) for _ in range(3))


def main() -> None:
    """Orchestrate. The source server and the measuring client run in their own processes, as
    the browser and Jupyter do, so the tunnel's process holds only the tunnel (its GIL is not
    shared with them; `ssh -L` gets a process of its own too)."""
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    me = [sys.executable, __file__]
    source = subprocess.Popen([*me, "--source"], stdout=subprocess.PIPE, text=True)
    assert source.stdout is not None
    src = int(source.stdout.readline())

    def measure(label: str, port: int) -> None:
        out = subprocess.run(
            [*me, "--measure", str(port), str(mib)], capture_output=True, text=True, check=True
        ).stdout
        down, up, lat = (float(x) for x in out.split())
        print(f"{label:<46} down {down:7.1f} MiB/s  up {up:7.1f} MiB/s  "
              f"new connection {lat:6.2f} ms", flush=True)  # fmt: skip

    try:
        print(f"{mib} MiB per transfer, best of 3; {os.cpu_count()} CPUs", flush=True)
        measure("direct TCP (no SSH, baseline)", src)
        with running_sshd() as sshd:
            kh = sshd.known_hosts()
            remote = SSHRemote.connect(
                "127.0.0.1", sshd.port, sshd.user, str(sshd.client_key), [str(kh)],
                allow_agent=False,
            )  # fmt: skip
            cipher = remote.transport.remote_cipher
            with Tunnel(lambda: remote.open_tcp("127.0.0.1", src)) as tunnel:
                tunnel.serve_in_thread()
                measure(f"hpcnb Tunnel, threads ({cipher})", tunnel.port)
            port, stop = selector_pump(lambda: remote.open_tcp("127.0.0.1", src))
            measure(f"selector loop, one thread ({cipher})", port)
            stop()
            remote.close()
            for c in (None, "aes128-gcm@openssh.com"):
                with ssh_l(sshd, kh, src, c) as lport:
                    measure(f"ssh -L ({c or 'OpenSSH default: chacha20-poly1305'})", lport)
    finally:
        source.terminate()
        source.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--source"]:
        print(source_server(), flush=True)
        threading.Event().wait()
    elif sys.argv[1:2] == ["--measure"]:
        print(*measure_all(int(sys.argv[2]), int(sys.argv[3])))
    else:
        main()
