"""A/B of the tunnel's cost on a 100-connection load: two hpcnb trees, one loopback sshd (needs root).

    python bench/load100_ab.py TREE_A TREE_B [--rounds 15] [--mode direct|nested|process]

Each tree's tunnel (hpcnb.ssh.openers.NotebookRoute's opener and feed.deliver, through
hpcnb.tunnel.Tunnel) runs in a process of its own, to a small HTTP server of its own process. A
client process fetches 313 requests (16.9 MB, sizes shaped like bench/run.py's JupyterLab cold
load) with 100 threads, each on its own new keep-alive connection. Rounds alternate A and B, and
the order flips every round (whichever goes first in a round measures higher). Prints, per tree,
the tunnel process's CPU ms per load and the wall ms, medians; asserts nothing. A tree is a folder
holding an `hpcnb/` (a `git worktree` of another commit, say). `nested` runs the node-ssh shape in
one process: a second SSH session to the same sshd inside a channel of the first; `process` the
node-ssh tunnel as it runs on POSIX (hpcnb.ssh.hopprocess: that second session in a child process,
whose CPU counts too). With `--mode-b` B runs another mode (TREE_B may be TREE_A: two modes of one tree).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUESTS, TOTAL = 313, 16_900_000


def sizes() -> list[int]:
    """Lab's shape: most requests a few KB, a few chunks of a MB or more."""
    rng = random.Random(15)
    raw = [rng.lognormvariate(8.5, 1.8) for _ in range(REQUESTS)]
    scale = TOTAL / sum(raw)
    return [max(200, int(x * scale)) for x in raw]


def serve() -> None:
    """HTTP/1.1 keep-alive GET /N -> N bytes, on one asyncio loop (Jupyter's shape: one thread)."""
    import asyncio

    body = os.urandom(8 << 20)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                n = int(head.split(b" ", 2)[1].strip(b"/"))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                view = memoryview(body)
                while n:
                    part = min(n, len(body))
                    writer.write(view[:part])
                    n -= part
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        srv = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=256)
        print(srv.sockets[0].getsockname()[1], flush=True)
        await srv.serve_forever()

    asyncio.run(main())


def tunnel(tree: str, sshd_port: int, user: str, key: str, kh: str, target: int, mode: str) -> None:
    sys.path.insert(0, tree)
    from hpcnb.ssh import SSHRemote
    from hpcnb.ssh.openers import NotebookRoute, Target
    from hpcnb.tunnel import Tunnel

    login = SSHRemote.connect("127.0.0.1", sshd_port, user, key, [kh], allow_agent=False)
    if mode == "process":  # node-ssh as it runs on POSIX: the node hop in a child process
        from hpcnb.ssh.hopprocess import NodeHopTunnel

        hop = NodeHopTunnel(Target("node-ssh", None, target, None, "127.0.0.2", ("127.0.0.1",)), login,
                            lambda: login, sshd_port=sshd_port)
        hop.serve_in_thread()
        print(hop.port, os.getpid(), flush=True)
        threading.Event().wait()
    route = NotebookRoute(Target("direct", "127.0.0.1", target, None, None), login, lambda: login)
    if mode == "nested":
        node = login.jump("127.0.0.1", sshd_port)
        route._upstream.connection = node  # the node-ssh shape: channels of a hop inside a channel
    with Tunnel(route) as tun:
        tun.serve_in_thread()
        print(tun.port, os.getpid(), flush=True)
        threading.Event().wait()


def load(port: int) -> float:
    paths = [f"/{n}" for n in sizes()]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                with lock:
                    if not paths:
                        return
                    path = paths.pop()
                conn.request("GET", path)
                resp = conn.getresponse()
                if len(resp.read()) != int(path[1:]):
                    raise RuntimeError(f"short body for {path}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def children(pid: int) -> list[int]:
    """pid's child processes (a node hop's, in `process` mode)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def cpu_ms(pid: int) -> float:
    """CPU of every live thread of pid and of its children, in ms (schedstat counts ns,
    /proc/PID/stat 10 ms ticks). A thread that ends between two readings is missed: the tunnel
    keeps its workers for 60 s."""
    total = 0
    for proc in (pid, *children(pid)):
        for task in Path(f"/proc/{proc}/task").iterdir():
            with contextlib.suppress(OSError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e6


def switches(pid: int) -> int:
    """Context switches of every live thread of pid and of its children, voluntary and not."""
    total = 0
    for task in (t for proc in (pid, *children(pid)) for t in Path(f"/proc/{proc}/task").iterdir()):
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches" in line:
                    total += int(line.split()[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("trees", nargs=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--mode", choices=("direct", "nested", "process"), default="direct")
    parser.add_argument("--mode-b", choices=("direct", "nested", "process"), help="B's, if not --mode")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "tests" / "integration")]
    from sshd_fixture import running_sshd

    me = [sys.executable, __file__]
    procs: list[subprocess.Popen[str]] = []

    def spawn(*argv: str) -> list[str]:
        proc = subprocess.Popen([*me, *argv], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        return proc.stdout.readline().split()

    try:
        with running_sshd() as sshd:
            kh = str(sshd.known_hosts())
            tunnels = {}
            for name, tree in zip("AB", args.trees, strict=True):
                target = spawn("--serve")[0]
                mode = args.mode_b if name == "B" and args.mode_b else args.mode
                port, pid = spawn("--tunnel", str(Path(tree).resolve()), str(sshd.port), sshd.user,
                                  str(sshd.client_key), kh, target, mode)
                tunnels[name] = (int(port), int(pid))
            cpu: dict[str, list[float]] = {"A": [], "B": []}
            wall: dict[str, list[float]] = {"A": [], "B": []}
            sw: dict[str, list[float]] = {"A": [], "B": []}
            for port, _ in tunnels.values():
                load(port)  # warm up
            for i in range(args.rounds):
                for name in ("AB" if i % 2 == 0 else "BA"):
                    port, pid = tunnels[name]
                    before, before_sw = cpu_ms(pid), switches(pid)
                    wall[name].append(load(port) * 1000)
                    cpu[name].append(cpu_ms(pid) - before)
                    sw[name].append(switches(pid) - before_sw)
            for name, tree in zip("AB", args.trees, strict=True):
                print(f"{name} {tree}: tunnel CPU ms/load median {statistics.median(cpu[name]):.0f} "
                      f"(min {min(cpu[name]):.0f}), wall ms median {statistics.median(wall[name]):.0f}, "
                      f"context switches median {statistics.median(sw[name]):.0f}")
    finally:
        for proc in procs:
            proc.kill()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve()
    elif sys.argv[1:2] == ["--tunnel"]:
        a = sys.argv[2:]
        tunnel(a[0], int(a[1]), a[2], a[3], a[4], int(a[5]), a[6])
    else:
        main()
