"""-q, -v, NO_COLOR, doctor's checklist marks, the SIGTERM guard and the browser opener."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from hpcnb_driver import Hpcnb
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcnb import browser
from hpcnb.cli import output as cli_ui
from hpcnb.cli.output import table

TESTBED_CONFIG = Path(__file__).resolve().parents[1] / "testbed" / "hpcnb.toml"


class FakeTty(io.StringIO):
    def __init__(self, encoding: str = "utf-8") -> None:
        super().__init__()
        self._encoding = encoding

    def isatty(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding


def test_marks_plain_when_no_color_or_not_a_tty(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert cli_ui.marks(io.StringIO()) == ("OK  ", "FAIL")
    ok, fail = cli_ui.marks(FakeTty())
    assert "✓" in ok and "\x1b[" in ok and "✗" in fail
    assert cli_ui.marks(FakeTty("ascii")) == ("OK  ", "FAIL")  # a console that cannot print ✓
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli_ui.marks(FakeTty()) == ("OK  ", "FAIL")


def test_quiet_and_verbose_together_is_a_usage_error(tmp_path):
    proc = Hpcnb(tmp_path / "state").run("-q", "-v", "sites")
    assert proc.returncode == 2
    assert "contradict" in proc.stderr


def test_no_ansi_in_output_when_not_a_tty(tmp_path):
    proc = Hpcnb(tmp_path / "state", config=TESTBED_CONFIG).run("doctor", "--cluster", "local")
    assert "\x1b[" not in proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0].startswith(("OK", "FAIL"))


def test_verbose_turns_on_the_debug_log(tmp_path):
    proc = Hpcnb(tmp_path / "state").run("-v", "doctor", "--cluster", "local")
    assert "hpcnb: hpcnb.remote: run: bash -c" in proc.stderr


def test_help_imports_only_click(tmp_path):
    code = ("import sys; from hpcnb import cli; "
            "heavy = [m for m in ('paramiko', 'jinja2', 'tabulate', 'sqlite3', 'logging', 'hpcnb.config') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_list_imports_no_remote_or_logging():
    # `hpcnb list` reads the store only: hpcnb.remote (with logging and subprocess) is imported
    # when a command runs something (issue 15: `list --all` over 10,000 sessions in 150 ms).
    code = ("import sys; before = set(sys.modules); "
            "from hpcnb import cli; import hpcnb.cluster, hpcnb.vscode; "
            "print([m for m in ('hpcnb.remote', 'logging', 'subprocess') "
            "if m in sys.modules and m not in before])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_sigterm_guard_survives_a_non_main_thread():
    import threading

    from hpcnb.cli.sessions import sigterm_is_interrupt as _sigterm_is_interrupt

    errors: list[BaseException] = []

    def run() -> None:
        try:
            _sigterm_is_interrupt()
        except BaseException as exc:  # noqa: BLE001 - the point of the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors == []


# ---- browser ---------------------------------------------------------------------------------


class Spawned:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict]] = []

    def __call__(self, argv, **kwargs):
        self.calls.append((argv, kwargs))


def test_wsl_prefers_wslview_then_cmd_then_powershell():
    url = "http://127.0.0.1:8888/lab?token=abc&x=1"
    have = {"wslview", "cmd.exe", "powershell.exe"}
    assert browser.wsl_argv(url, lambda n: n if n in have else None) == ["wslview", url]
    have.discard("wslview")
    argv = browser.wsl_argv(url, lambda n: n if n in have else None)
    assert argv[:4] == ["cmd.exe", "/c", "start", '""'] and argv[4].endswith("token=abc^&x=1")
    have.discard("cmd.exe")
    assert browser.wsl_argv(url, lambda n: n if n in have else None)[0] == "powershell.exe"
    assert browser.wsl_argv(url, lambda n: None) is None


def test_open_on_wsl_spawns_detached_and_never_waits():
    spawned = Spawned()
    started, how = browser.open_url("http://127.0.0.1:1/", popen=spawned, platform="linux", wsl=True,
                                    which=lambda n: n if n == "wslview" else None)
    assert (started, how) == (True, "wslview")
    argv, kwargs = spawned.calls[0]
    assert argv == ["wslview", "http://127.0.0.1:1/"]
    assert kwargs["stdin"] == subprocess.DEVNULL and kwargs.get("start_new_session") is True


def test_linux_without_a_display_does_not_start_a_text_browser():
    spawned = Spawned()
    started, why = browser.open_url("http://127.0.0.1:1/", popen=spawned, env={}, platform="linux",
                                    wsl=False)
    assert not started and "display" in why and spawned.calls == []


def test_wsl_without_any_opener_fails_softly():
    started, why = browser.open_url("http://x/", popen=Spawned(), platform="linux", wsl=True,
                                    which=lambda n: None)
    assert not started and "WSL" in why


def test_a_failing_opener_does_not_raise():
    def broken(argv, **kwargs):
        raise FileNotFoundError(2, "No such file or directory")

    started, why = browser.open_url("http://x/", popen=broken, platform="linux", wsl=True,
                                    which=lambda n: n)
    assert not started and "No such file" in why


@pytest.mark.parametrize("text, expected", [("Linux version 5.15.90.1-microsoft-standard-WSL2", True),
                                            ("Linux version 6.1.0-18-amd64 (debian-kernel@...)", False)])
def test_is_wsl_reads_proc_version(tmp_path, text, expected):
    version = tmp_path / "version"
    version.write_text(text)
    assert browser.is_wsl(version) is (expected and sys.platform.startswith("linux"))


# What hpcnb's tables hold: names, states, hosts, paths; accented and CJK letters (two columns wide).
_TEXT = st.text(st.sampled_from("abcXYZ019 ._-:/()[]@éüßñ日本語中文\u2013"), max_size=12)


def _number_to_tabulate(text: str) -> bool:
    """tabulate takes what float() reads for a number: "1e5", "0.", also "0_0" (PEP 515)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


# (tabulate rewrites a decimal such as "0." or "1e5" as a number, and right-aligns "0_0"; hpcnb's
# tables hold none of them.)
_WORD = _TEXT.map(str.strip).filter(lambda t: t.isdigit() or not _number_to_tabulate(t))
_CELL = st.one_of(_WORD, st.integers(-10**6, 10**9).map(str), st.just(""))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5).flatmap(lambda n: st.tuples(
    st.lists(st.text(st.characters(min_codepoint=65, max_codepoint=90), min_size=1, max_size=10),
             min_size=n, max_size=n),
    st.lists(st.lists(_CELL, min_size=n, max_size=n), max_size=6))))
def test_tables_print_as_tabulate_prints_them(case) -> None:
    # hpcnb's own renderer (fast: issue 15's `list --all` over 10,000 sessions) against tabulate's
    # "simple" format, the way hpcnb's tables looked before it.
    from tabulate import tabulate

    headers, rows = case
    assert table(rows, headers) == tabulate(rows, headers=headers)


def test_a_column_is_numeric_only_when_every_cell_is_a_number_or_empty() -> None:
    # table() checks a whole column with one regex over its cells joined by newlines: a cell that
    # holds a newline itself must not make "1\n2" two numbers.
    assert table([["1\n2"], ["3"]], ["A"]).splitlines()[2] == "1"
    assert table([["12"], [""], ["3"]], ["ID"]) == "  ID\n----\n  12\n\n   3"
    assert table([["12"], ["x"]], ["ID"]) == "ID\n----\n12\nx"
