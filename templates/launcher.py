# ruff: noqa: PTH103, PTH105, PTH108, PTH111, PTH112, PTH118, UP021
# (os.path and universal_newlines on purpose: this file runs on the node's python3 >= 3.6.)
"""hpcnb launcher: runs on the compute node inside the job, started by the job script's body.

render.py inlines this file into the script (a quoted heredoc, so nothing in it is expanded).
It reads ONLY os.environ (HPCNB_* set by the body), uses only the standard library, and must run
on the node's python3 >= 3.6 (old system Pythons exist on clusters): no walrus, no generics.

What it does (the job <-> hpcnb handshake, docs/architecture.md "The handshake"):
  token -> 0600 file; bind address per tunnel mode; start Jupyter, or the app of HPCNB_APP (a
  recipe from hpcnb/apps.py: argv words with {host} {port} {socket} {session} {dir} {user}, the
  token in the recipe's secret_env, in the environment only); poll its readiness URL until it
  answers; write connection.json atomically (0600); forward SIGTERM/SIGINT/SIGHUP to it; on any
  exit write `ended`.
"""

import errno
import http.client
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIND_ATTEMPTS = 3  # a free port can be taken between our probe and Jupyter's bind
STOP_GRACE_S = 20.0  # Jupyter shuts kernels down on SIGTERM; Slurm's KillWait default is 30 s
SOCK_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
PLACEHOLDER_RE = re.compile(r"\{(host|port|socket|session|dir|user)\}")


# A Jupyter config file (Python, read by the server at start): TCP_NODELAY on every connection the
# server accepts, and kept. Tornado turns Nagle's algorithm back on after each HTTP response
# (http1connection.HTTP1Connection.finish: "leaving the stream in its default state"), the
# websocket upgrade's 101 included, and jupyter_server's kernel websocket never turns it off
# (tornado's WebSocketHandler.set_nodelay docs: "100-500ms delays due to the interaction between
# Nagle's algorithm and TCP delayed ACKs"). Each execute's replies after the first then waited for
# the peer's delayed ACK: 48 ms a kernel round trip over TCP, 4 over a unix socket (issue 15;
# tcpdump on the node's loopback shows the hold). HTTPServer.handle_stream is tornado's documented
# per-connection hook; set_nodelay ignores unix sockets. Jupyter's installed files are not changed.
NODELAY_CONFIG = """\
# Written by hpcnb's launcher for this session only (hpcnb's templates/launcher.py, NODELAY_CONFIG).
# It sets no option, so it overrides none of yours.
try:
    from tornado.httpserver import HTTPServer as _HpcnbHTTPServer

    def _hpcnb_keep_nodelay(stream):
        set_nodelay = stream.set_nodelay
        set_nodelay(True)
        stream.set_nodelay = lambda value: set_nodelay(True)

    _hpcnb_handle_stream = _HpcnbHTTPServer.handle_stream
    if not getattr(_hpcnb_handle_stream, "hpcnb_nodelay", False):
        def _hpcnb_nodelay_handle_stream(self, stream, address):
            try:
                _hpcnb_keep_nodelay(stream)
            except Exception:
                pass
            return _hpcnb_handle_stream(self, stream, address)
        _hpcnb_nodelay_handle_stream.hpcnb_nodelay = True
        _HpcnbHTTPServer.handle_stream = _hpcnb_nodelay_handle_stream
except Exception:
    pass
"""


class Fatal(Exception):
    """A reason the notebook cannot start; exit_code is what the job exits with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def log(message: str) -> None:
    # stdout is the session's job.log (the body did `exec >>job.log 2>&1`)
    print("hpcnb-launcher: " + message, flush=True)


def write_private(path: str, text: str) -> None:
    """Write atomically (tmp + rename) with mode 0600, whatever the umask."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class Launcher:
    def __init__(self, env: "os._Environ[str]") -> None:
        self.session = env["HPCNB_SESSION_DIR"]
        self.job_id = env["HPCNB_JOB_ID"]
        self.tunnel = env.get("HPCNB_TUNNEL", "direct")
        self.jupyter = env.get("HPCNB_JUPYTER", "lab")
        # The app's recipe (hpcnb/apps.py); no command: Jupyter, started by this file's own rules.
        self.recipe = json.loads(env.get("HPCNB_APP") or "{}")  # type: dict
        self.command = list(self.recipe.get("command") or [])  # type: list
        self.label = self.recipe.get("name", "app") if self.command else "Jupyter"
        self.notebook_dir = env.get("HPCNB_NOTEBOOK_DIR", "")
        self.bind_host = env.get("HPCNB_BIND_HOST", "")
        self.start_timeout = float(env.get("HPCNB_START_TIMEOUT", "300"))
        self.walltime = int(env.get("HPCNB_WALLTIME_SECONDS", "0"))
        self.job_start = float(env.get("HPCNB_JOB_START") or time.time())
        self.proc = None  # type: subprocess.Popen | None
        # The user's umask from before the job script made it 077 (for hpcnb's own files): Jupyter
        # and its kernels get it back, so notebooks are as shareable as the user's other files.
        self.user_umask = int(env.get("HPCNB_UMASK") or "022", 8)
        self.stop_signal = 0
        self.stop_at = 0.0
        self.tmpdir = ""
        self.sock = ""

    # ------------------------------------------------------------ signals
    def on_signal(self, signum: int, frame: object) -> None:
        if not self.stop_signal:
            self.stop_signal = signum
            self.stop_at = time.monotonic()
            log(f"got signal {signal.Signals(signum).name}, stopping {self.label}")
        if self.proc is not None and self.proc.poll() is None:
            # Jupyter's SIGINT handler asks for confirmation on a tty; SIGTERM always shuts down.
            self.proc.send_signal(signal.SIGTERM)

    # ------------------------------------------------------------ endpoint
    def node_address(self) -> str:
        """The node's cluster address: what `hostname` resolves to, else `hostname -I`'s first."""
        if self.bind_host:
            return self.bind_host
        try:
            addr = socket.gethostbyname(socket.gethostname())
        except OSError:
            addr = ""
        if addr and not addr.startswith("127."):
            return addr
        try:
            out = subprocess.run(
                ["hostname", "-I"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                timeout=10,
                universal_newlines=True,
                check=False,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        for cand in out.split():
            if ":" not in cand and not cand.startswith("127."):
                return cand
        raise Fatal(
            "cannot find this node's cluster address (hostname resolves to loopback "
            'and `hostname -I` lists none); set tunnel = "node-ssh"'
        )

    def socket_path(self) -> str:
        path = os.path.join(self.session, "jupyter.sock")
        if len(path.encode()) <= SOCK_PATH_MAX:
            return path
        # A long $HOME or job id overflows sun_path: use a private (0700) dir in /tmp instead.
        self.tmpdir = tempfile.mkdtemp(prefix="hpcnb-")
        return os.path.join(self.tmpdir, "jupyter.sock")

    @staticmethod
    def free_port(host: str) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return s.getsockname()[1]

    @staticmethod
    def port_taken(host: str, port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError as e:
                return e.errno == errno.EADDRINUSE
        return False

    # ------------------------------------------------------------ jupyter
    def app(self) -> str:
        """The class Jupyter's options go to: ServerApp (jupyter_server: JupyterLab, Notebook 7),
        or NotebookApp for the classic Notebook 6 (which some sites still install), which
        ignores every ServerApp option."""
        if self.jupyter != "notebook":
            return "ServerApp"
        try:
            import notebook
        except ImportError:
            return "ServerApp"
        major = str(getattr(notebook, "__version__", "7")).split(".")[0]
        return "NotebookApp" if major.isdigit() and int(major) < 7 else "ServerApp"

    def app_argv(self, host: str, port: int, sock: str) -> list:
        """The recipe's words with its placeholders filled (nothing else in them is touched)."""
        words = self.recipe.get("socket_command") if sock else self.command
        root = os.path.expanduser(self.notebook_dir) if self.notebook_dir else os.path.expanduser("~")
        values = {"host": host, "port": str(port), "socket": sock, "session": self.session,
                  "dir": root, "user": pwd.getpwuid(os.getuid()).pw_name}
        return [PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], word) for word in words]

    def argv(self, host: str, port: int, sock: str) -> list:
        if self.command:
            return self.app_argv(host, port, sock)
        exe = shutil.which("jupyter")
        argv = [exe] if exe else [sys.executable, "-m", "jupyter"]
        app = self.app()
        argv += [self.jupyter, "--no-browser", f"--{app}.port_retries=0"]
        if sock:
            argv += [f"--{app}.sock=" + sock, f"--{app}.sock_mode=0600"]
        else:
            argv += [f"--{app}.ip=" + host, f"--{app}.port={port}"]
        if os.geteuid() == 0:
            # Cluster jobs never run as root; containers and CI often do. Jupyter refuses root
            # unless told; we tell it, and say so in the log.
            log("running as root: passing --allow-root")
            argv.append("--allow-root")
        if self.notebook_dir:
            option = "notebook_dir" if app == "NotebookApp" else "root_dir"
            argv.append(f"--{app}.{option}=" + os.path.expanduser(self.notebook_dir))
        return argv

    def child_env(self, token: str) -> dict:
        env = dict(os.environ)
        env.pop("HPCNB_APP", None)
        # Never on argv: ps and /proc/*/cmdline are world-readable.
        env[self.recipe.get("secret_env") or "JUPYTER_TOKEN"] = token
        if self.command:
            return env
        # Per-session runtime dir: nodes sharing $HOME must not clean up each other's files.
        runtime = os.path.join(self.session, "runtime")
        os.makedirs(runtime, mode=0o700, exist_ok=True)
        env["JUPYTER_RUNTIME_DIR"] = runtime
        # One more config folder, with NODELAY_CONFIG (it sets no option: the user's stay).
        config = os.path.join(self.session, "jupyter-config")
        os.makedirs(config, mode=0o700, exist_ok=True)
        for name in ("jupyter_server_config.py", "jupyter_notebook_config.py"):
            write_private(os.path.join(config, name), NODELAY_CONFIG)
        env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
            p for p in (config, env.get("JUPYTER_CONFIG_PATH", "")) if p)
        return env

    def answers(self, host: str, port: int, sock: str) -> bool:
        """Jupyter: GET /api is 200. An app: its readiness path answers below 400 (a login page's
        redirect counts: it serves)."""
        conn = UnixHTTPConnection(sock) if sock else http.client.HTTPConnection(host, port, timeout=2)
        try:
            conn.request("GET", self.recipe.get("ready", "/api") if self.command else "/api")
            status = conn.getresponse().status
            return status < 400 if self.command else status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def wait_ready(self, host: str, port: int, sock: str, deadline: float) -> str:
        delay = 0.2
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return "exited"
            if self.stop_signal:
                return "stopped"
            if self.answers(host, port, sock):
                return "ready"
            if time.monotonic() > deadline:
                return "timeout"
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def stop(self) -> int:
        """SIGTERM Jupyter, wait STOP_GRACE_S, then SIGKILL. Returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log(f"{self.label} ignored SIGTERM for {STOP_GRACE_S:.0f} s: killing it")
                self.proc.kill()
        return self.proc.wait()

    # ------------------------------------------------------------ files
    def write_connection(self, host: str, port: int, sock: str, token: str) -> None:
        info = {
            "version": 1,
            "job_id": self.job_id,
            "host": host if not sock else None,
            "port": port if not sock else None,
            "socket": sock or None,
            "token": token,
            "pid": self.proc.pid if self.proc else None,
            "launcher_pid": os.getpid(),
            "node": socket.gethostname(),
            "started": time.time(),
            "walltime_end": self.job_start + self.walltime if self.walltime else None,
            "tunnel": self.tunnel,
            "jupyter": self.jupyter,
            "base_url": "/",
            # How hpcnb checks it through the tunnel and what the browser opens (hpcnb/apps.py).
            "app": self.recipe.get("name", "jupyter") if self.command else "jupyter",
            "login": self.recipe.get("login", "token") if self.command else "token",
            "ready": self.recipe.get("ready", "/") if self.command else "/api/status",
            "url_path": self.recipe.get("url_path", "/") if self.command else self.jupyter_path(),
        }
        write_private(os.path.join(self.session, "connection.json"), json.dumps(info, indent=1))

    def jupyter_path(self) -> str:
        return "/lab" if self.jupyter == "lab" else "/tree"

    def write_ended(self, exit_code: int, reason: str) -> None:
        info = {
            "ended": time.time(),
            "exit_code": exit_code,
            "reason": reason,
            "signal": signal.Signals(self.stop_signal).name if self.stop_signal else None,
        }
        write_private(os.path.join(self.session, "ended"), json.dumps(info))
        if self.sock and os.path.lexists(self.sock):
            os.unlink(self.sock)
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    # ------------------------------------------------------------ main
    def start(self, token: str) -> "tuple":
        """Start Jupyter (or the app) until it answers. Returns (host, port, sock)."""
        deadline = time.monotonic() + self.start_timeout
        env = self.child_env(token)
        for attempt in range(1, BIND_ATTEMPTS + 1):
            host, port, sock = "", 0, ""
            if self.tunnel == "socket":
                sock = self.sock = self.socket_path()
                if os.path.lexists(sock):
                    os.unlink(sock)
            else:
                host = "127.0.0.1" if self.tunnel == "node-ssh" else self.node_address()
                port = self.free_port(host)
            argv = self.argv(host, port, sock)
            log("starting (attempt {}): {}".format(attempt, " ".join(argv)))
            try:
                self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                             preexec_fn=lambda: os.umask(self.user_umask))
            except OSError as e:  # not installed here, or not executable: one line, not a traceback
                raise Fatal(f"cannot start {self.label}: {argv[0]}: {e.strerror}", 127) from None
            state = self.wait_ready(host, port, sock, deadline)
            if state == "ready":
                return host, port, sock
            if state == "timeout":
                self.stop()
                waited = f"{self.start_timeout:.0f} s (HPCNB_START_TIMEOUT)"
                raise Fatal(f"{self.label} did not answer within {waited}", 124)
            if state == "stopped":
                raise Fatal(f"stopped by signal before {self.label} was ready", 128 + self.stop_signal)
            code = self.proc.returncode
            if not sock and attempt < BIND_ATTEMPTS and self.port_taken(host, port):
                log(f"port {port} was taken before {self.label} could bind it; retrying")
                continue
            raise Fatal(f"{self.label} exited with code {code} before it was ready (see above)", code or 1)
        raise Fatal(f"no free port after {BIND_ATTEMPTS} attempts")

    def run(self) -> int:
        os.umask(0o077)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        token = secrets.token_hex(24)
        write_private(os.path.join(self.session, "token"), token + "\n")
        try:
            root = os.path.expanduser(self.notebook_dir) if self.notebook_dir else ""
            if root and not os.path.isdir(root):
                raise Fatal(f"notebook_dir {root!r} is not a directory on this node", 2)
            host, port, sock = self.start(token)
        except Fatal as e:
            if self.proc is not None and self.proc.poll() is None:
                self.stop()
            log(str(e))
            self.write_ended(e.exit_code, str(e))
            return e.exit_code
        self.write_connection(host, port, sock, token)
        log("ready: " + (sock or f"{host}:{port}"))
        while True:
            try:
                code = self.proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if self.stop_signal and time.monotonic() - self.stop_at > STOP_GRACE_S:
                    code = self.stop()
                    break
        reason = "stopped by signal" if self.stop_signal else f"{self.label} exited"
        log(f"{reason} (exit code {code})")
        self.write_ended(code, reason)
        return code


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (Jupyter's --ServerApp.sock)."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=2)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


if __name__ == "__main__":
    sys.exit(Launcher(os.environ).run())
