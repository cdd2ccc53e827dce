"""What a browser does to a notebook, measured against one base URL: a big download, a JupyterLab
cold load (6 parallel connections), small sequential requests and kernel round trips."""

from __future__ import annotations

import http.client
import json
import queue
import re
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

BIG_FILE = "bench256.bin"
BIG_BYTES = 256 << 20


def curl_download(url: str, token: str, prefix: list[str] | None = None) -> float:
    """MB/s (10^6) of one GET through curl (C, so the client is never the bottleneck)."""
    argv = [*(prefix or []), "curl", "-sS", "-o", "/dev/null", "-H", f"Authorization: token {token}",
            "-w", "%{size_download} %{time_total} %{http_code}", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True).stdout.split()
    size, secs, code = int(out[0]), float(out[1]), out[2]
    if code != "200" or size != BIG_BYTES:
        raise RuntimeError(f"download of {url} gave HTTP {code}, {size} bytes")
    return size / secs / 1e6


def throughput(url: str, token: str, runs: int, prefix: list[str] | None = None) -> list[float]:
    curl_download(url, token, prefix)  # warm: page cache on the node, TCP/SSH windows
    return [curl_download(url, token, prefix) for _ in range(runs)]


# --- JupyterLab cold load ---------------------------------------------------------------------------
class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.config: str = ""
        self._in_config = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("id") == "jupyter-config-data":
            self._in_config = True
        if tag == "script" and a.get("src"):
            self.refs.append(a["src"] or "")
        if tag == "link" and a.get("href"):
            self.refs.append(a["href"] or "")

    def handle_data(self, data: str) -> None:
        if self._in_config:
            self.config += data

    def handle_endtag(self, tag: str) -> None:
        self._in_config = False


CHUNK_MAP = re.compile(r'\.u=\w+=>""\+\((\d+)===\w+\?"(\w+)":\w+\)\+"\."\+\(\{([^}]*)\}')
CHUNK_REF = re.compile(r"\.e\((\d+)\)")
ASSET_REF = re.compile(r'"([0-9a-f]{16,20}\.(?:woff2?|ttf|eot|svg|png|css))"')
# What JupyterLab asks the server for while it starts (besides static files).
LAB_API = ("/lab/api/settings?ids_only=true", "/lab/api/settings", "/api/kernelspecs",
           "/lab/api/translations/default", "/api/sessions", "/api/kernels", "/api/terminals",
           "/api/contents?content=1", "/lab/api/workspaces/default", "/api/me", "/api/status")


def _get(conn: http.client.HTTPConnection, path: str, token: str) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"Authorization": f"token {token}", "Accept-Encoding": "identity"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def _fetch_parallel(port: int, token: str, paths: list[str], workers: int) -> dict[str, bytes]:
    todo: queue.Queue[str] = queue.Queue()
    for p in paths:
        todo.put(p)
    out: dict[str, bytes] = {}
    errors: list[str] = []

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                try:
                    path = todo.get_nowait()
                except queue.Empty:
                    return
                status, body = _get(conn, path, token)
                if status >= 500:
                    errors.append(f"{path}: HTTP {status}")
                out[path] = body
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors[:3]))
    return out


def lab_assets(port: int, token: str) -> list[list[str]]:
    """The waves of requests a cold /lab makes: the page; its scripts and links; the API calls,
    the federated extensions' entries and every webpack chunk reachable from main.js by `.e(N)`
    (a closure: more than one view needs, so an upper bound); fonts/images the chunks name."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    status, html = _get(conn, "/lab", token)
    conn.close()
    if status != 200:
        raise RuntimeError(f"/lab gave HTTP {status}")
    parser = _Refs()
    parser.feed(html.decode())
    cfg = json.loads(parser.config)
    static = cfg["fullStaticUrl"].rstrip("/") + "/"
    scripts = [urlsplit(urljoin("/lab", r)) for r in parser.refs]
    wave1 = [u.path + (f"?{u.query}" if u.query else "") for u in scripts]
    fetched = _fetch_parallel(port, token, wave1, 6)
    main = next((b.decode() for p, b in fetched.items() if "/main." in p), "")
    m = CHUNK_MAP.search(main)
    if not m:
        raise RuntimeError("cannot find webpack's chunk map in main.js")
    named_id, named = m.group(1), m.group(2)
    hashes = dict(re.findall(r'(\d+):"([0-9a-f]+)"', m.group(3)))

    def chunk_path(cid: str) -> str:
        return f"{static}{named if cid == named_id else cid}.{hashes[cid]}.js"

    ext = cfg.get("fullLabextensionsUrl", "/lab/extensions").rstrip("/")
    fed = [f"{ext}/{e['name']}/{e['load']}" for e in cfg.get("federated_extensions", [])]
    seen: set[str] = set()
    frontier = [c for c in dict.fromkeys(CHUNK_REF.findall(main)) if c in hashes]
    waves = [["/lab"], wave1, [*LAB_API, *fed]]
    assets: set[str] = set()
    while frontier:
        frontier = [c for c in frontier if c not in seen]
        seen.update(frontier)
        if not frontier:
            break
        paths = [chunk_path(c) for c in frontier]
        waves.append(paths)
        bodies = _fetch_parallel(port, token, paths, 6)
        nxt: list[str] = []
        for body in bodies.values():
            text = body.decode(errors="replace")
            nxt += [c for c in CHUNK_REF.findall(text) if c in hashes]
            assets.update(static + a for a in ASSET_REF.findall(text))
        frontier = list(dict.fromkeys(nxt))
    if assets:
        waves.append(sorted(assets))
    return waves


def cold_load(port: int, token: str, waves: list[list[str]]) -> tuple[float, int, int]:
    """Seconds to fetch the waves in order (each wave over 6 new connections), requests, bytes."""
    start = time.perf_counter()
    n = size = 0
    for wave in waves:
        bodies = _fetch_parallel(port, token, wave, 6)
        n += len(bodies)
        size += sum(len(b) for b in bodies.values())
    return time.perf_counter() - start, n, size


def cold_load_parallel(port: int, token: str, waves: list[list[str]], workers: int = 100
                       ) -> tuple[float, int, int]:
    """The same requests as cold_load, all at once: one list, `workers` threads each on its own new
    keep-alive connection taking the next request (100 requests in flight). Seconds, requests, bytes."""
    paths = list(dict.fromkeys(p for wave in waves for p in wave))
    start = time.perf_counter()
    bodies = _fetch_parallel(port, token, paths, workers)
    return time.perf_counter() - start, len(bodies), sum(len(b) for b in bodies.values())


# --- small requests ---------------------------------------------------------------------------------
def status_latency(port: int, token: str, n: int = 200) -> list[float]:
    """ms per sequential GET /api/status on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    try:
        _get(conn, "/api/status", token)
        for _ in range(n):
            t = time.perf_counter()
            status, _ = _get(conn, "/api/status", token)
            times.append((time.perf_counter() - t) * 1000)
            if status != 200:
                raise RuntimeError(f"/api/status gave HTTP {status}")
    finally:
        conn.close()
    return times


def start_kernel(port: int, token: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/api/kernels", body=json.dumps({"name": "python3"}),
                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if resp.status != 201:
        raise RuntimeError(f"POST /api/kernels gave HTTP {resp.status}: {body[:200]!r}")
    return json.loads(body)["id"]


def delete_kernel(port: int, token: str, kernel_id: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("DELETE", f"/api/kernels/{kernel_id}", headers={"Authorization": f"token {token}"})
    conn.getresponse().read()
    conn.close()


def kernel_socket(url: str, token: str, sock: object = None):  # -> websocket.WebSocket
    """The kernel's websocket at `url` (ws://HOST[:PORT]/api/kernels/ID/channels); over `sock`,
    an already connected socket (a unix socket), when given."""
    import websocket

    return websocket.create_connection(url, header=[f"Authorization: token {token}"], timeout=60,
                                       enable_multithread=False, socket=sock)


def kernel_round_trips(ws, n: int, keep_going: Callable[[], bool] | None = None,
                       warmups: int = 3) -> list[float]:
    """ms per `1` executed over the kernel websocket `ws`, from send to its execute_reply: `n` of
    them after `warmups` (the kernel's first executes are slower), or, with `keep_going`, as many
    as start while it says so (at most `n`)."""
    session = uuid.uuid4().hex
    times: list[float] = []
    for i in range(n + warmups):
        if i >= warmups and keep_going is not None and not keep_going():
            break
        msg_id = uuid.uuid4().hex
        t = time.perf_counter()
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "bench", "session": session,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": "1", "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False}}))
        while True:
            msg = json.loads(ws.recv())
            if (msg.get("msg_type") == "execute_reply"
                    and msg.get("parent_header", {}).get("msg_id") == msg_id):
                break
        if i >= warmups:
            times.append((time.perf_counter() - t) * 1000)
    return times


def kernel_latency(port: int, token: str, kernel_id: str, n: int = 200) -> list[float]:
    """ms per `1` executed over the kernel websocket, from send to its execute_reply."""
    ws = kernel_socket(f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels", token)
    try:
        return kernel_round_trips(ws, n)
    finally:
        ws.close()


# The download that loads the tunnel: the big file LOADED_COPIES times in a row on one connection.
LOADED_COPIES = 4


def kernel_latency_loaded(port: int, token: str, kernel_id: str, n: int = 2000
                          ) -> tuple[list[float], float, int]:
    """Kernel round trips (ms) while a 1 GiB download (the big file LOADED_COPIES times, one curl,
    one keep-alive connection) runs through the same local port: the websocket is opened and warmed
    first, then curl starts, and round trips are timed from 0.2 s after its start until it ends
    (at most n). Also the download's MB/s and bytes."""
    ws = kernel_socket(f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels", token)
    try:
        kernel_round_trips(ws, 0)  # warm-ups only
        url = f"http://127.0.0.1:{port}/files/{BIG_FILE}"
        argv = ["curl", "-sS", "-H", f"Authorization: token {token}",
                "-w", "%{size_download} %{http_code}\n"]
        for _ in range(LOADED_COPIES):
            argv += ["-o", "/dev/null", url]
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.2)  # the download is under way
            times = kernel_round_trips(ws, n, keep_going=lambda: proc.poll() is None, warmups=0)
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        secs = time.perf_counter() - t
    finally:
        ws.close()
    got = [line.split() for line in out.splitlines() if line.strip()]
    size = sum(int(g[0]) for g in got)
    if proc.returncode != 0 or len(got) != LOADED_COPIES or any(g[1] != "200" for g in got) \
            or size != LOADED_COPIES * BIG_BYTES:
        raise RuntimeError(f"loaded download through {port}: exit {proc.returncode}, {got}, {err[-300:]}")
    return times, size / secs / 1e6, size


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


def _main(argv: list[str]) -> None:
    """`python3 http_load.py kernel-latency TARGET TOKEN KERNEL N`: kernel round trips with no tunnel,
    run by the bench under `nsenter --net=...` (TARGET: HOST:PORT, or unix:/path/to/socket); prints
    the ms as one JSON list."""
    import socket

    if len(argv) != 5 or argv[0] != "kernel-latency":
        raise SystemExit(_main.__doc__)
    target, token, kernel_id, n = argv[1], argv[2], argv[3], int(argv[4])
    if target.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(target[len("unix:"):])
        ws = kernel_socket(f"ws://localhost/api/kernels/{kernel_id}/channels", token, sock)
    else:
        ws = kernel_socket(f"ws://{target}/api/kernels/{kernel_id}/channels", token)
    try:
        print(json.dumps(kernel_round_trips(ws, n)))
    finally:
        ws.close()


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
