"""hpcnb.keeper without SSH: route keys, where a keeper listens, its private folder and authkey, the
wire format and errors across it, `persist`, desktop notifications, and a real keeper (server.Keeper)
serving KeptRemote over a unix socket with a fake login (LocalRemote) instead of paramiko's.

Every socket lives in a short folder under /tmp (a unix socket path has ~104 bytes); every keeper
thread is stopped and joined, and client.spawn is replaced so no keeper process is ever started.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from multiprocessing.connection import Client, Pipe
from pathlib import Path
from typing import Any

import pytest

from hpcnb import desktop as notify
from hpcnb.config import load_cluster
from hpcnb.errors import (
    AuthenticationFailed,
    CommandError,
    ConfigError,
    HostKeyError,
    HpcnbError,
    JobNotFound,
    KeeperError,
    SchedulerUnavailable,
)
from hpcnb.keeper import __main__ as keeper_main
from hpcnb.keeper import client, persist, server, wire
from hpcnb.keeper import endpoint as ep
from hpcnb.prompts import Prompt
from hpcnb.remote import CommandResult, LocalRemote

KEY = "0123456789abcdef01234567"  # a route key's shape: 24 hex digits


def short_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="kt-", dir="/tmp"))


def cluster_cfg(**changes: Any) -> types.SimpleNamespace:
    """What KeptRemote reads of a ClusterConfig."""
    values: dict[str, Any] = {"name": "testc", "login_host": "login.example.org", "port": 22,
                              "user": "alice", "identity_file": None, "known_hosts": None,
                              "persist": 43200.0}
    values.update(changes)
    return types.SimpleNamespace(**values)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


@pytest.fixture
def route_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A route's outside inputs pinned: the ssh config file (absent until written) and state dir."""
    monkeypatch.setenv("HPCNB_SSH_CONFIG", str(tmp_path / "ssh_config"))
    monkeypatch.setenv("HPCNB_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "ssh_config"


# --- 1. route keys ------------------------------------------------------------------------------

BASE_PARTS: dict[str, object] = {
    "login_host": "login.example.org", "port": 22, "user": "alice", "identity_file": None,
    "known_hosts": None, "ssh_config": "/home/alice/.ssh/config", "ssh_config_sha256": "",
    "home": "/home/alice", "state": "/home/alice/.local/state/hpcnb"}


def test_route_key_is_stable_and_hex() -> None:
    key = ep.route_key(BASE_PARTS)
    assert key == ep.route_key(dict(reversed(list(BASE_PARTS.items()))))  # order does not matter
    assert len(key) == 24 and int(key, 16) >= 0


@pytest.mark.parametrize(("field", "value"), [
    ("login_host", "login2.example.org"), ("port", 2222), ("user", "bob"),
    ("identity_file", "/home/alice/.ssh/id_ed25519"), ("known_hosts", "/home/alice/kh"),
    ("ssh_config_sha256", "ab" * 32), ("state", "/elsewhere/state"),
    ("ssh_config", "/other/config"), ("home", "/home/bob")])
def test_route_key_changes_with_every_field(field: str, value: object) -> None:
    assert ep.route_key({**BASE_PARTS, field: value}) != ep.route_key(BASE_PARTS)


@pytest.mark.parametrize("change", [
    {"login_host": "other.example.org"}, {"port": 2222}, {"user": "bob"},
    {"identity_file": "/k/id_ed25519"}, {"known_hosts": "/k/known_hosts"}])
def test_route_parts_of_a_cluster_change_the_key(route_env: Path, change: dict[str, Any]) -> None:
    assert client.route_key_of(cluster_cfg()) == client.route_key_of(cluster_cfg())
    assert client.route_key_of(cluster_cfg(**change)) != client.route_key_of(cluster_cfg())


def test_route_key_follows_the_ssh_config_text(route_env: Path) -> None:
    cfg = cluster_cfg()
    absent = client.route_key_of(cfg)
    route_env.write_text("Host login.example.org\n  User alice\n")
    plain = client.route_key_of(cfg)
    assert plain != absent and plain == client.route_key_of(cfg)
    route_env.write_text("Host login.example.org\n  User alice\n  ProxyJump gate.example.org\n")
    assert client.route_key_of(cfg) not in (plain, absent)
    assert client.route_parts(cfg)["ssh_config"] == str(route_env)


def test_a_config_that_is_only_hpcnbs_include_is_the_same_route(route_env: Path) -> None:
    absent = client.route_key_of(cluster_cfg())
    route_env.write_text("Include hpcnb.conf  # VS Code hosts of `hpcnb code` (remove to undo)\n")
    assert client.route_key_of(cluster_cfg()) == absent
    route_env.write_text("Include hpcnb.conf\nHost login.example.org\n  User alice\n")
    assert client.route_key_of(cluster_cfg()) != absent


def test_route_key_follows_the_state_dir(route_env: Path, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    before = client.route_key_of(cluster_cfg())
    monkeypatch.setenv("HPCNB_STATE_DIR", str(tmp_path / "other-state"))
    assert client.route_key_of(cluster_cfg()) != before


def test_route_parts_default_user_is_the_local_one(route_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client.getpass, "getuser", lambda: "localme")
    assert client.route_parts(cluster_cfg(user=None))["user"] == "localme"
    assert client.route_key_of(cluster_cfg(user=None)) == client.route_key_of(cluster_cfg(user="localme"))


# --- 2. where a keeper listens ------------------------------------------------------------------

@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_runtime_dir_env_wins(platform: str) -> None:
    env = {"HPCNB_RUNTIME_DIR": "/x/keepers", "XDG_RUNTIME_DIR": "/run/user/1000",
           "LOCALAPPDATA": r"C:\Users\me\AppData\Local"}
    assert ep.runtime_folder(env, platform) == Path("/x/keepers")


def test_runtime_dir_env_expands_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ep.runtime_folder({"HPCNB_RUNTIME_DIR": "~/k"}, "linux") == tmp_path / "k"


def test_runtime_folder_windows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    local = r"C:\Users\me\AppData\Local"
    env = {"LOCALAPPDATA": local, "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert ep.runtime_folder(env, "win32") == Path(local) / "hpcnb" / "keepers"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ep.runtime_folder({}, "win32") == tmp_path / "AppData" / "Local" / "hpcnb" / "keepers"


def test_runtime_folder_posix(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ep.runtime_folder({"XDG_RUNTIME_DIR": "/run/user/1000"}, "linux") == Path("/run/user/1000/hpcnb")
    monkeypatch.setattr(ep.os, "getuid", lambda: 4321)
    assert ep.runtime_folder({}, "linux") == Path("/tmp/hpcnb-4321")
    assert ep.runtime_folder({}, "darwin") == Path("/tmp/hpcnb-4321")


def test_endpoint_on_windows_is_a_named_pipe_per_user(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = Path("/k")
    pipe = ep.endpoint_for(KEY, folder, platform="win32", user="alice")
    assert pipe.family == "AF_PIPE"
    assert pipe.address == rf"\\.\pipe\hpcnb-alice-{KEY}"
    assert pipe.authkey_file == folder / "authkey"  # the secret still lives in the private folder
    monkeypatch.setenv("USERNAME", "bob")
    assert ep.endpoint_for(KEY, folder, platform="win32").address == rf"\\.\pipe\hpcnb-bob-{KEY}"


def test_endpoint_on_posix_is_a_socket_in_the_folder() -> None:
    folder = Path("/tmp/hpcnb-1000")
    sock = ep.endpoint_for(KEY, folder, platform="linux")
    assert (sock.family, sock.address) == ("AF_UNIX", f"/tmp/hpcnb-1000/{KEY}.sock")
    assert sock.key == KEY and sock.folder == folder
    assert (sock.lock, sock.info, sock.log) == (folder / f"{KEY}.lock", folder / f"{KEY}.json",
                                                folder / f"{KEY}.log")


@pytest.mark.parametrize(("platform", "length"), [("linux", 107), ("darwin", 103)])
def test_a_folder_too_long_for_a_socket_is_one_line(platform: str, length: int) -> None:
    fits = Path("/" + "k" * (length - len(f"/{KEY}.sock") - 1))
    assert len(ep.endpoint_for(KEY, fits, platform=platform).address) == length
    with pytest.raises(KeeperError) as err:
        ep.endpoint_for(KEY, Path(f"{fits}k"), platform=platform)
    assert str(err.value).startswith(f"the keepers' folder {fits}k is too long for a unix socket in it "
                                     f"({length + 1} bytes with the socket's name, at most {length}) "
                                     "(set HPCNB_RUNTIME_DIR to a shorter folder")


@pytest.mark.parametrize("env", [{}, {"XDG_RUNTIME_DIR": "/run/user/4294967294"}])
def test_default_socket_paths_fit_macos_limit(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ep.os, "getuid", lambda: 4294967294)  # the longest uid
    key = ep.route_key(BASE_PARTS)
    for platform in ("linux", "darwin"):
        address = ep.endpoint_for(key, ep.runtime_folder(env, platform), platform=platform).address
        assert len(address.encode()) < 104, address


# --- 3. the private folder and its authkey --------------------------------------------------------

@pytest.fixture
def scratch() -> Iterator[Path]:
    folder = short_folder()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_folder_is_made_0700(scratch: Path) -> None:
    folder = scratch / "a" / "keepers"
    assert ep.private_folder(folder) == folder
    assert folder.is_dir() and mode(folder) == 0o700


def test_private_folder_tightens_an_open_one(scratch: Path) -> None:
    folder = scratch / "open"
    folder.mkdir()
    folder.chmod(0o755)
    ep.private_folder(folder)
    assert mode(folder) == 0o700


def test_private_folder_refuses_another_users(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = os.getuid() + 1
    monkeypatch.setattr(ep.os, "getuid", lambda: other)
    with pytest.raises(KeeperError) as info:
        ep.private_folder(scratch)
    assert str(scratch) in one_line(info.value) and ep.RUNTIME_ENV in str(info.value)


def test_private_folder_refuses_a_file(scratch: Path) -> None:
    path = scratch / "not-a-folder"
    path.write_text("x")
    with pytest.raises(KeeperError) as info:
        ep.private_folder(path)
    assert str(path) in one_line(info.value)


def test_private_folder_refuses_a_symlink(scratch: Path) -> None:
    real = scratch / "real"
    real.mkdir(mode=0o700)
    link = scratch / "link"
    link.symlink_to(real)
    with pytest.raises(KeeperError):
        ep.private_folder(link)


def test_authkey_is_made_once_0600(scratch: Path) -> None:
    key = ep.authkey(scratch)
    assert len(key) == ep.AUTHKEY_BYTES == 32
    assert mode(scratch / "authkey") == 0o600
    assert ep.authkey(scratch) == key
    assert [p.name for p in scratch.iterdir()] == ["authkey"]  # no temporary file left


def test_authkey_race_reads_the_winners_key(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process writes the key between this one's read and its link: the winner's is used."""
    winner = b"w" * 32
    real = ep.secrets.token_bytes

    def other_process_wins(n: int) -> bytes:
        (scratch / "authkey").write_bytes(winner)
        return real(n)

    monkeypatch.setattr(ep.secrets, "token_bytes", other_process_wins)
    assert ep.authkey(scratch) == winner
    monkeypatch.setattr(ep.secrets, "token_bytes", real)
    assert ep.authkey(scratch) == winner
    assert [p.name for p in scratch.iterdir()] == ["authkey"]


def test_authkey_race_between_threads(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = []
    both_opened = threading.Event()

    class SlowLink:  # os, with link() waiting until the second thread tried to make its file
        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        def open(self, *args: Any) -> int:
            try:
                return os.open(*args)
            finally:
                opened.append(1)
                if len(opened) == 2:
                    both_opened.set()

        def link(self, *args: Any) -> None:
            both_opened.wait(2.0)
            os.link(*args)

    monkeypatch.setattr(ep, "os", SlowLink())
    results: list[object] = []

    def make() -> None:
        try:
            results.append(ep.authkey(scratch))
        except KeeperError as exc:
            results.append(exc)

    threads = [threading.Thread(target=make) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5.0)
    assert len(results) == 2 and all(isinstance(r, bytes) for r in results), results
    assert results[0] == results[1]


# --- 4. the wire --------------------------------------------------------------------------------

@pytest.fixture
def pipe() -> Iterator[tuple[Any, Any]]:
    a, b = Pipe()
    yield a, b
    a.close()
    b.close()


def test_wire_round_trip(pipe: tuple[Any, Any]) -> None:
    a, b = pipe
    message = {"op": "run", "argv": ["echo", "é", "$(x)"], "stdin": None, "n": 1.5,
               "data": wire.encode_bytes(b"\x00\xff\n")}
    wire.send(a, message)
    got = wire.recv(b, timeout=1.0)
    assert got == message and wire.decode_bytes(got["data"]) == b"\x00\xff\n"


def test_wire_recv_timeout(pipe: tuple[Any, Any]) -> None:
    with pytest.raises(KeeperError) as info:
        wire.recv(pipe[1], timeout=0.01)
    assert "0.01" in one_line(info.value)


@pytest.mark.parametrize("data", [b"[1, 2]", b'"text"', b"null", b"not json", b"\xff\xfe"])
def test_wire_recv_refuses_what_is_not_an_object(pipe: tuple[Any, Any], data: bytes) -> None:
    pipe[0].send_bytes(data)
    with pytest.raises(KeeperError) as info:
        wire.recv(pipe[1], timeout=1.0)
    assert "unreadable" in one_line(info.value)


def test_wire_recv_eof_propagates(pipe: tuple[Any, Any]) -> None:
    pipe[0].close()
    with pytest.raises(EOFError):
        wire.recv(pipe[1], timeout=1.0)


def crossed(exc: BaseException) -> BaseException:
    """exc sent as an error message and raised again on the other side (through real JSON)."""
    a, b = Pipe()
    try:
        wire.send(a, wire.error_message(exc))
        message = wire.recv(b, timeout=1.0)
    finally:
        a.close()
        b.close()
    with pytest.raises(BaseException) as info:
        wire.raise_error(message)
    return info.value


@pytest.mark.parametrize(("exc", "exit_code"), [
    (AuthenticationFailed("the code was refused", hint="try the next code"), 4),
    (HostKeyError("login.example.org offered an unknown key", hint="hpcnb doctor"), 5),
    (JobNotFound("no job 42 on testc"), 8),
    (ConfigError("bad persist"), 3),
    (KeeperError("the keeper is ending"), 12),
])
def test_errors_keep_class_message_hint_and_exit_code(exc: HpcnbError, exit_code: int) -> None:
    back = crossed(exc)
    assert type(back) is type(exc) and back.exit_code == exit_code  # type: ignore[attr-defined]
    assert str(back) == str(exc) and back.hint == exc.hint  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", [CommandError, SchedulerUnavailable])
def test_command_error_keeps_evidence_and_message_once(cls: type[CommandError]) -> None:
    exc = cls("sbatch failed", argv=["sbatch", "--parsable", "job.sh"], exit_status=1,
              stderr="warning\nsbatch: error: invalid partition\n", hint="hpcnb doctor")
    back = crossed(exc)
    assert type(back) is cls and back.exit_code == exc.exit_code
    assert str(back) == str(exc) and str(back).count("sbatch failed") == 1
    assert back.message == exc.message  # type: ignore[attr-defined]
    assert (back.argv, back.exit_status, back.stderr) == (exc.argv, 1, exc.stderr)  # type: ignore[attr-defined]


def test_command_error_without_exit_status() -> None:
    exc = CommandError("command timed out after 5 s", argv=["squeue"], exit_status=None)
    back = crossed(exc)
    assert isinstance(back, CommandError) and back.exit_status is None and str(back) == str(exc)


def test_file_not_found_stays_file_not_found() -> None:
    try:
        Path("/nonexistent/hpcnb/job.log").read_bytes()
    except FileNotFoundError as exc:
        back = crossed(exc)
    assert type(back) is FileNotFoundError and "/nonexistent/hpcnb/job.log" in str(back)


@pytest.mark.parametrize("name", ["NoSuchError", "last_line", "Sequence", "Exception"])
def test_unknown_error_names_become_keeper_error(name: str) -> None:
    with pytest.raises(KeeperError) as info:
        wire.raise_error({"error": name, "message": "something odd"})
    assert info.value.exit_code == 12 and str(info.value) == "something odd"


def test_other_exceptions_become_keeper_error() -> None:
    back = crossed(ValueError("bad value"))
    assert type(back) is KeeperError and str(back) == "ValueError: bad value"


def test_raise_error_ignores_replies() -> None:
    wire.raise_error({"ok": True})
    wire.raise_error({"result": {"exit_status": 1}})


# --- 5. persist ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "seconds"), [
    ("12h", 43200.0), ("30m", 1800.0), ("90s", 90.0), ("1d", 86400.0), ("1.5h", 5400.0),
    (" 12H ", 43200.0), ("2 h", 7200.0), (persist.DEFAULT, 43200.0)])
def test_persist_durations(value: str, seconds: float) -> None:
    assert persist.parse(value, "cfg") == seconds


@pytest.mark.parametrize("value", ["no", "off", "OFF", False, "0", "false"])
def test_persist_off(value: object) -> None:
    assert persist.parse(value, "cfg") is None


@pytest.mark.parametrize("value", ["12", "h", "-1h", True, "12x", "0h", "", "1h30m"])
def test_persist_bad_values(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        persist.parse(value, "config.toml [clusters.x]")
    text = one_line(info.value)
    assert repr(value) in text and "config.toml [clusters.x]" in text and "persist" in text


@pytest.fixture
def user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.delenv("HPCNB_CLUSTER", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))

    def write(text: str) -> None:
        cfg = tmp_path / "config.toml"
        cfg.write_text(text)
        monkeypatch.setenv("HPCNB_CONFIG", str(cfg))

    return write


def test_config_persist_default_and_values(user_config: Any) -> None:
    user_config('[clusters.pm]\nextends = "perlmutter"\npersist = "no"\n'
                '[clusters.pm2]\nextends = "perlmutter"\npersist = "30m"\n'
                '[clusters.pm3]\nextends = "perlmutter"\npersist = false\n')
    assert load_cluster("perlmutter").persist == 43200.0
    assert load_cluster("pm").persist is None
    assert load_cluster("pm2").persist == 1800.0
    assert load_cluster("pm3").persist is None


@pytest.mark.parametrize("value", ["5", '"12"', "true"])
def test_config_persist_wrong(user_config: Any, value: str) -> None:
    user_config(f'[clusters.pm]\nextends = "perlmutter"\npersist = {value}\n')
    with pytest.raises(ConfigError) as info:
        load_cluster("pm")
    assert "persist" in one_line(info.value)


# --- 6. desktop notifications -------------------------------------------------------------------

HOSTILE_TITLE = 'it\'s "$(touch /tmp/pwned)" `id`; end run'
HOSTILE_BODY = "code for a'b\"c $HOME %PATH% & echo"


def tools(monkeypatch: pytest.MonkeyPatch, present: bool) -> None:
    monkeypatch.setattr(notify.shutil, "which", lambda name: f"/usr/bin/{name}" if present else None)


def test_notify_darwin_passes_text_as_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    tools(monkeypatch, True)
    found = notify.command(HOSTILE_TITLE, HOSTILE_BODY, platform="darwin")
    assert found is not None
    argv, extra = found
    assert argv[:2] == ["osascript", "-e"] and argv[3:] == [HOSTILE_TITLE, HOSTILE_BODY]
    assert HOSTILE_TITLE not in argv[2] and HOSTILE_BODY not in argv[2] and "$(" not in argv[2]
    assert extra == {}


def test_notify_windows_passes_text_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    tools(monkeypatch, True)
    found = notify.command(HOSTILE_TITLE, HOSTILE_BODY, platform="win32")
    assert found is not None
    argv, extra = found
    assert argv[0] == "powershell" and "-Command" in argv
    script = argv[argv.index("-Command") + 1]
    assert all(HOSTILE_TITLE not in word and HOSTILE_BODY not in word for word in argv)
    assert "$(" not in script and "$env:HPCNB_TITLE" in script and "$env:HPCNB_BODY" in script
    assert extra == {"HPCNB_TITLE": HOSTILE_TITLE, "HPCNB_BODY": HOSTILE_BODY}


def test_notify_linux_passes_text_as_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    tools(monkeypatch, True)
    assert notify.command(HOSTILE_TITLE, HOSTILE_BODY, platform="linux") == (
        ["notify-send", "--app-name=hpcnb", HOSTILE_TITLE, HOSTILE_BODY], {})


@pytest.mark.parametrize("platform", ["darwin", "win32", "linux"])
def test_notify_without_the_tool(monkeypatch: pytest.MonkeyPatch, platform: str) -> None:
    tools(monkeypatch, False)
    assert notify.command("t", "b", platform=platform) is None


@pytest.fixture
def notify_threads(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The threads notify.notify starts (started for real, recorded to be joined)."""
    real, started = threading.Thread, []

    def spy(*args: Any, **kwargs: Any) -> threading.Thread:
        thread = real(*args, **kwargs)
        started.append(thread)
        return thread

    monkeypatch.setattr(notify.threading, "Thread", spy)
    return started


def test_notify_without_a_tool_does_nothing(monkeypatch: pytest.MonkeyPatch,
                                            notify_threads: list[threading.Thread]) -> None:
    tools(monkeypatch, False)
    assert notify.notify("hpcnb: log in again", "body") is None
    assert notify_threads == []


def test_notify_never_raises_when_the_tool_fails(monkeypatch: pytest.MonkeyPatch,
                                                 notify_threads: list[threading.Thread]) -> None:
    monkeypatch.setattr(notify, "command", lambda title, body: (["/nonexistent/hpcnb-notify"], {}))
    assert notify.notify("hpcnb: log in again", "body") is None
    [thread] = notify_threads
    assert thread.daemon
    thread.join(5.0)


@pytest.mark.parametrize("error", [OSError("no such program"), notify.subprocess.TimeoutExpired("x", 10)])
def test_notify_run_swallows_failures(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def fail(*_a: object, **_k: object) -> None:
        raise error

    monkeypatch.setattr(notify.subprocess, "run", fail)
    notify._run(["notify-send", "t", "b"], {"HPCNB_TITLE": "t"})


def test_notify_run_of_a_missing_program() -> None:
    notify._run(["/nonexistent/hpcnb-notify-send", "t", "b"], {})


# --- 7. a real keeper, a fake login -------------------------------------------------------------

class Running:
    """server.Keeper serving in a thread on a real unix socket, its login replaced by `login`."""

    def __init__(self, folder: Path, cfg: Any, login: Any, *, idle_s: float = 60.0,
                 gated: bool = False) -> None:
        key = client.route_key_of(cfg)
        self.endpoint = ep.endpoint_for(key, folder)
        self.authkey = ep.authkey(folder)
        self.spec = server.Spec(key=key, cluster=cfg.name, login_host=cfg.login_host, port=cfg.port,
                                user=cfg.user, identity_file=cfg.identity_file,
                                known_hosts=cfg.known_hosts, accept_new_host_key=False, idle_s=idle_s)
        self.keeper = server.Keeper(self.spec, self.endpoint, self.authkey)
        self.keeper.login = login  # type: ignore[method-assign]
        self.listener = server.listen(self.endpoint)
        self.gate = threading.Event()  # gated: the first accept waits for it
        if not gated:
            self.gate.set()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, name="test-keeper", daemon=True)
        self.thread.start()

    def accept(self) -> Any:  # the Listener serve_forever sees
        self.gate.wait(5.0)
        return self.listener.accept()

    def _serve(self) -> None:
        try:
            self.keeper.serve_forever(self)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 (the test reads it)
            self.errors.append(exc)

    def ended(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def close(self) -> None:
        """As the keeper process ends on SIGTERM: stop() from another thread, then the listener
        closed after serve_forever returns (stop's own wake-up connection may wait for that: the
        loop can see the stop before it accepts again)."""
        self.gate.set()
        stopper = threading.Thread(target=self.keeper.stop, args=("test over",), daemon=True)
        stopper.start()
        self.thread.join(5.0)
        self.listener.close()
        stopper.join(5.0)
        assert not self.thread.is_alive() and not stopper.is_alive()


@pytest.fixture
def keeper_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A short private runtime folder; the route's other inputs pinned; no keeper process ever."""
    folder = short_folder()
    monkeypatch.setenv("HPCNB_RUNTIME_DIR", str(folder))
    monkeypatch.setenv("HPCNB_SSH_CONFIG", str(tmp_path / "no-ssh-config"))
    monkeypatch.setenv("HPCNB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("HPCNB_ASKPASS", raising=False)

    def no_spawn(*_a: object, **_k: object) -> None:
        raise AssertionError("a unit test started a keeper process")

    monkeypatch.setattr(client, "spawn", no_spawn)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def remote_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def local_remote(remote_home: Path) -> LocalRemote:
    return LocalRemote(env={"HOME": str(remote_home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})


@pytest.fixture
def kept(keeper_home: Path, local_remote: LocalRemote) -> Iterator[tuple[Running, client.KeptRemote]]:
    cfg = cluster_cfg()
    running = Running(keeper_home, cfg, lambda asker: local_remote)
    try:
        yield running, client.KeptRemote(cfg)
    finally:
        running.close()
    assert running.errors == []


def test_kept_remote_uses_the_keepers_endpoint(kept: tuple[Running, client.KeptRemote]) -> None:
    running, remote = kept
    assert remote.key == running.spec.key and remote.endpoint == running.endpoint
    assert remote.folder == running.endpoint.folder


def test_run_through_the_keeper(kept: tuple[Running, client.KeptRemote]) -> None:
    _, remote = kept
    result = remote.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert result == CommandResult(["sh", "-c", "echo out; echo err >&2; exit 3"], 3, "out\n", "err\n")
    assert not result.ok
    assert remote.run(["cat"], stdin="from stdin\n", timeout=10).stdout == "from stdin\n"


def test_command_error_through_the_keeper(kept: tuple[Running, client.KeptRemote]) -> None:
    _, remote = kept
    with pytest.raises(CommandError) as info:
        remote.run(["/nonexistent/sbatch", "job.sh"], timeout=10)
    assert info.value.argv == ["/nonexistent/sbatch", "job.sh"] and info.value.exit_status is None
    assert str(info.value).count("cannot run /nonexistent/sbatch") == 1


def test_read_file_through_the_keeper(kept: tuple[Running, client.KeptRemote], remote_home: Path) -> None:
    _, remote = kept
    (remote_home / "job.log").write_bytes(b"line 1\n\x00\xff binary\n")
    assert remote.read_file("job.log") == b"line 1\n\x00\xff binary\n"
    assert remote.read_file(str(remote_home / "job.log")) == b"line 1\n\x00\xff binary\n"
    with pytest.raises(FileNotFoundError):
        remote.read_file("missing.log")
    assert remote.read_file("job.log").startswith(b"line 1")  # the keeper lives on


def test_another_route_is_refused(kept: tuple[Running, client.KeptRemote]) -> None:
    running, remote = kept
    remote.key = "f" * 24
    with pytest.raises(KeeperError) as info:
        remote.hello()
    assert "another route" in one_line(info.value)
    assert running.thread.is_alive()


def test_unknown_request_is_refused(kept: tuple[Running, client.KeptRemote]) -> None:
    _, remote = kept
    with pytest.raises(KeeperError, match="unknown request 'rm'"):
        remote.request({"op": "rm"}, timeout=5.0)


def test_hello_describes_the_keeper(kept: tuple[Running, client.KeptRemote]) -> None:
    running, remote = kept
    hello = remote.hello()
    assert hello["cluster"] == "testc" and hello["pid"] == os.getpid()
    assert hello["key"] == running.spec.key and hello["route"] == "login.example.org"
    assert hello["logged_in"] is False and hello["persist_s"] == 60.0 and hello["tunnels"] == []


def test_logout_ends_the_keeper(kept: tuple[Running, client.KeptRemote]) -> None:
    running, remote = kept
    assert remote.request({"op": "logout"}, timeout=5.0) == {"ok": True}
    assert running.ended(3.0) and running.keeper.exit_reason == "logged out"


def test_wrong_authkey_is_refused_and_the_keeper_serves_on(kept: tuple[Running, client.KeptRemote]) -> None:
    running, remote = kept
    intruder = client.KeptRemote(cluster_cfg())
    intruder._authkey = b"x" * 32
    with pytest.raises(KeeperError) as info:
        intruder.hello()
    assert "refused" in one_line(info.value)
    assert remote.hello()["pid"] == os.getpid() and running.thread.is_alive()


def test_idle_keeper_stops_by_itself(keeper_home: Path, local_remote: LocalRemote) -> None:
    running = Running(keeper_home, cluster_cfg(), lambda asker: local_remote, idle_s=0.5)
    try:
        assert running.ended(4.0)
        assert running.keeper.exit_reason.startswith("idle")
    finally:
        running.close()
    assert running.errors == []


def test_a_keeper_whose_socket_was_deleted_still_ends(keeper_home: Path, local_remote: LocalRemote) -> None:
    # Its folder cleaned away (/tmp cleaners, rm -r): nothing can connect to wake its accept loop,
    # so stop() closes the login and ends the process itself (__main__: SIGTERM on an ending keeper
    # raises out of the accept), not a keeper that never ends and holds its login for ever.
    running = Running(keeper_home, cluster_cfg(), lambda asker: local_remote)
    ended: list[str] = []
    running.keeper.WAKE_WAIT_S = 0.3
    running.keeper.on_unwakeable = lambda: ended.append("process ends")
    Client(running.endpoint.address, family="AF_UNIX", authkey=running.authkey).close()  # it serves
    time.sleep(0.2)  # and is back in accept()
    Path(running.endpoint.address).unlink()
    running.keeper.stop("idle for 43200 s")
    assert ended == ["process ends"]
    assert running.thread.is_alive()  # still in accept(): what the process end takes care of
    sock = running.listener._listener._socket  # type: ignore[attr-defined]
    sock.shutdown(socket.SHUT_RDWR)  # let the test's thread go
    assert running.ended(5.0)
    Path(running.endpoint.address).touch()  # what the listener's close unlinks
    running.listener.close()


def test_live_keepers_and_logout(keeper_home: Path, local_remote: LocalRemote) -> None:
    running = Running(keeper_home, cluster_cfg(), lambda asker: local_remote)
    try:
        keeper_main.write_info(running.endpoint, running.spec)
        assert mode(running.endpoint.info) == 0o600
        [found] = client.live_keepers()
        assert found["key"] == running.spec.key and found["cluster"] == "testc"
        assert client.logout(["0" * 24]) == []
        assert running.thread.is_alive()
        assert [d["key"] for d in client.logout([running.spec.key])] == [running.spec.key]
        assert running.ended(3.0)
    finally:
        running.close()  # removes the socket, as the keeper process does
    assert client.live_keepers() == []
    assert not running.endpoint.info.exists()


def test_prompt_reaches_the_command_and_its_answer_the_login(
        keeper_home: Path, local_remote: LocalRemote, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    askpass = tmp_path / "askpass"
    askpass.write_text('#!/bin/sh\nprintf "%s|%s" "$1" "$HPCNB_ASKPASS_ECHO" > "$0.asked"\necho 246810\n')
    askpass.chmod(0o755)
    monkeypatch.setenv("HPCNB_ASKPASS", str(askpass))
    answers: list[str] = []
    running: Running

    def login(asker: Any) -> LocalRemote:
        ask = running.keeper.relay.handler(asker, again=False)
        answers.append(ask(Prompt(host="login.example.org", user="alice", text="Verification code: ",
                                  echo=False)))
        return local_remote

    running = Running(keeper_home, cluster_cfg(), login)
    try:
        result = client.KeptRemote(cluster_cfg()).run(["echo", "in"], timeout=10)
    finally:
        running.close()
    assert result.stdout == "in\n" and answers == ["246810"]
    assert Path(f"{askpass}.asked").read_text() == "Verification code: |0"
    assert running.errors == []


def test_a_refused_askpass_fails_the_login(
        keeper_home: Path, local_remote: LocalRemote, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    askpass = tmp_path / "askpass"
    askpass.write_text("#!/bin/sh\necho 'no code today' >&2\nexit 1\n")
    askpass.chmod(0o755)
    monkeypatch.setenv("HPCNB_ASKPASS", str(askpass))
    running: Running

    def login(asker: Any) -> LocalRemote:
        running.keeper.relay.handler(asker, again=False)(
            Prompt(host="login.example.org", user="alice", text="Password: ", echo=False))
        return local_remote

    running = Running(keeper_home, cluster_cfg(), login)
    try:
        with pytest.raises(AuthenticationFailed) as info:
            client.KeptRemote(cluster_cfg()).run(["true"], timeout=10)
        assert info.value.exit_code == 4 and "no code today" in one_line(info.value)
    finally:
        running.close()


def probe_closed_at_once(address: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(address)  # and closed before the keeper's challenge (a command's Ctrl-C)


def probe_bad_length(address: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2.0)
        sock.connect(address)
        sock.recv(4096)  # the challenge
        sock.sendall(struct.pack("!i", 10**6))  # an answer far longer than any digest


@pytest.mark.parametrize("probe", [probe_closed_at_once, probe_bad_length])
def test_a_stray_connection_does_not_end_the_keeper(
        keeper_home: Path, local_remote: LocalRemote, probe: Any) -> None:
    running = Running(keeper_home, cluster_cfg(), lambda asker: local_remote, gated=True)
    try:
        if probe is probe_closed_at_once:
            probe(running.endpoint.address)  # gone before the keeper accepts it
            running.gate.set()
        else:
            running.gate.set()
            probe(running.endpoint.address)
        running.thread.join(0.3)
        assert running.thread.is_alive(), running.errors
        assert client.KeptRemote(cluster_cfg()).hello()["pid"] == os.getpid()
    finally:
        running.close()


def test_an_unreadable_file_is_not_the_keeper_going_away(keeper_home: Path) -> None:
    class Refusing:
        def read_file(self, path: str) -> bytes:
            raise PermissionError(13, "Permission denied", path)

    running = Running(keeper_home, cluster_cfg(), lambda asker: Refusing())
    try:
        with pytest.raises(Exception) as info:  # which class is the question
            client.KeptRemote(cluster_cfg()).read_file("secret.log")
        assert "went away" not in str(info.value) and "secret.log" in str(info.value)
    finally:
        running.close()


def test_a_keeper_that_hangs_up_is_named(keeper_home: Path) -> None:
    def login(asker: Any) -> LocalRemote:
        asker.conn.close()  # the keeper drops this command's line unanswered
        raise EOFError

    running = Running(keeper_home, cluster_cfg(), login)
    try:
        with pytest.raises(KeeperError) as info:
            client.KeptRemote(cluster_cfg()).run(["true"], timeout=5)
        assert "went away" in one_line(info.value) and "went away: EOFError" in str(info.value)
    finally:
        running.close()


# --- 8. stale keepers ---------------------------------------------------------------------------

def test_live_keepers_removes_stale_files(keeper_home: Path) -> None:
    stale_sock = keeper_home / f"{KEY}.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale_sock))  # a socket nobody listens on: its keeper died
    (keeper_home / f"{KEY}.json").write_text('{"pid": 999999999}')
    (keeper_home / f"{'e' * 24}.json").write_text("{}")  # and one with no socket at all
    assert client.live_keepers() == []
    assert not stale_sock.exists()
    assert sorted(keeper_home.glob("*.json")) == []


def test_live_keepers_without_a_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "never-made"
    monkeypatch.setenv("HPCNB_RUNTIME_DIR", str(folder))
    assert client.live_keepers() == []
    assert not folder.exists()


def test_no_keeper_listening_starts_one(keeper_home: Path) -> None:
    """No keeper listening: KeptRemote starts one (here: the replaced spawn says so)."""
    remote = client.KeptRemote(cluster_cfg())
    with pytest.raises(AssertionError, match="started a keeper"):
        remote.hello()
