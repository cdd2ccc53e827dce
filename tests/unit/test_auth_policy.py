"""hpcnb.ssh.auth: the order keys are tried in (identity files, ssh-agent, passphrase-protected
files), IdentitiesOnly, the passphrase cache shared by hops, keyboard-interactive prompts (partial
success, empty rounds, never a second answer, refused answers, keys-only hops) and the
$HPCNB_ASKPASS program.

A small fake stands in for paramiko.Transport and a fake for paramiko.Agent; the key files are real.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from hpcnb.errors import AuthenticationFailed
from hpcnb.prompts import ASKPASS_ENV, Prompt, askpass_or_terminal
from hpcnb.ssh.auth import Credentials, authenticate
from hpcnb.ssh.hostkeys import fingerprint

HOST, USER = "login.example.org", "alice"
KBD = "keyboard-interactive"
KbdHandler = Callable[[str, str, Sequence[tuple[str, bool]]], list[str]]
Round = tuple[str, str, list[tuple[str, bool]]]  # title, instructions, prompts


@dataclass(frozen=True)
class Keys:
    a: paramiko.PKey
    b: paramiko.PKey
    c: paramiko.PKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate(), paramiko.RSAKey.generate(1024))


class FakeTransport:
    """What _Authenticator uses of paramiko.Transport, driven by a small script of the server's
    behaviour. Like paramiko: auth_publickey returns the methods still wanted (partial success) or
    raises AuthenticationException (refused) / BadAuthenticationType (method not allowed)."""

    def __init__(
        self,
        accept: Sequence[paramiko.PKey] = (),
        *,
        then: Sequence[str] = (),
        methods: Sequence[str] = ("publickey", KBD),
        rounds: Sequence[Round] = (("", "", [("Verification code: ", False)]),),
        code: str = "123456",
    ) -> None:
        self.accept = {k.asbytes() for k in accept}
        self.then = list(then)
        self.methods = list(methods)
        self.rounds = list(rounds)
        self.code = code
        self.offered: list[bytes] = []
        self.answers: list[list[str]] = []
        self.authenticated = False

    def auth_publickey(self, username: str, key: paramiko.PKey) -> list[str]:
        assert username == USER
        if "publickey" not in self.methods:
            raise paramiko.BadAuthenticationType("Bad authentication type", self.methods)
        self.offered.append(key.asbytes())
        if key.asbytes() not in self.accept:
            raise paramiko.AuthenticationException("Authentication failed.")
        self.authenticated = not self.then
        return list(self.then)

    def auth_interactive(self, username: str, handler: KbdHandler, submethods: str = "") -> list[str]:
        assert username == USER
        if KBD not in self.methods and KBD not in self.then:
            raise paramiko.BadAuthenticationType("Bad authentication type", self.methods)
        for title, instructions, prompts in self.rounds:
            answers = handler(title, instructions, prompts)
            assert len(answers) == len(prompts)
            if prompts:
                self.answers.append(answers)
        if not self.answers or self.answers[-1] != [self.code]:
            raise paramiko.AuthenticationException("Authentication failed.")
        self.authenticated = True
        return []

    def is_authenticated(self) -> bool:
        return self.authenticated


class FakeAgent:
    keys: Sequence[paramiko.PKey] = ()
    opened = 0
    closed = 0

    def __init__(self) -> None:
        FakeAgent.opened += 1

    def get_keys(self) -> tuple[paramiko.PKey, ...]:
        return tuple(self.keys)

    def close(self) -> None:
        FakeAgent.closed += 1


@pytest.fixture(autouse=True)
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> type[FakeAgent]:
    """No real ssh-agent and no real ~/.ssh: an empty fake agent and $HOME in tmp_path."""
    monkeypatch.setattr(FakeAgent, "keys", ())
    monkeypatch.setattr(FakeAgent, "opened", 0)
    monkeypatch.setattr(FakeAgent, "closed", 0)
    monkeypatch.setattr(paramiko, "Agent", FakeAgent)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ASKPASS_ENV, raising=False)
    return FakeAgent


def save(key: paramiko.PKey, path: Path, password: str | None = None, *, pub: bool = False) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    key.write_private_key_file(str(path), password=password)
    if pub:
        path.with_name(path.name + ".pub").write_text(f"{key.get_name()} {key.get_base64()} me@here\n")
    return str(path)


class Asker:
    """A PromptHandler that records what it was asked and answers from a table (by substring)."""

    def __init__(self, answers: dict[str, str] | None = None) -> None:
        self.answers = answers or {}
        self.asked: list[Prompt] = []

    def __call__(self, prompt: Prompt) -> str:
        self.asked.append(prompt)
        for part, answer in self.answers.items():
            if part in prompt.text:
                return answer
        raise AssertionError(f"unexpected prompt {prompt.text!r}")


def tried_sources(exc: AuthenticationFailed) -> list[str]:
    """The sources named in a 'tried ...' failure, in order."""
    tried = exc.message.split(": tried ", 1)[1]
    return [entry.split(" (", 1)[0] for entry in tried.split("; ")]


# --- which keys, in which order ------------------------------------------------------------------


def test_openssh_order_files_then_agent_then_locked_files(
    tmp_path: Path, keys: Keys, agent: type[FakeAgent]
) -> None:
    locked = save(keys.b, tmp_path / "id_locked", "sesame")
    plain = save(keys.a, tmp_path / "id_plain")
    agent.keys = (keys.c,)
    asker = Asker({"passphrase": "sesame"})
    transport = FakeTransport()  # accepts nothing
    with pytest.raises(AuthenticationFailed) as err:
        authenticate(transport, HOST, USER, Credentials((locked, plain), prompt=asker))
    assert tried_sources(err.value) == [plain, "ssh-agent", locked]
    assert transport.offered == [keys.a.asbytes(), keys.c.asbytes(), keys.b.asbytes()]
    assert fingerprint(keys.c) in err.value.message
    assert [p.text for p in asker.asked] == [f"Enter passphrase for key '{locked}': "]
    assert asker.asked[0].echo is False and (asker.asked[0].host, asker.asked[0].user) == (HOST, USER)
    assert (agent.opened, agent.closed) == (1, 1)


def test_first_accepted_key_ends_it_without_asking(
    tmp_path: Path, keys: Keys, agent: type[FakeAgent]
) -> None:
    locked = save(keys.b, tmp_path / "id_locked", "sesame")
    agent.keys = (keys.c,)
    asker = Asker()
    transport = FakeTransport(accept=[keys.c])
    authenticate(transport, HOST, USER, Credentials((locked,), prompt=asker))
    assert transport.authenticated and asker.asked == []
    assert agent.closed == 1


def test_agent_not_used_when_not_allowed(tmp_path: Path, keys: Keys, agent: type[FakeAgent]) -> None:
    plain = save(keys.a, tmp_path / "id_plain")
    agent.keys = (keys.c,)
    with pytest.raises(AuthenticationFailed) as err:
        authenticate(FakeTransport(accept=[keys.c]), HOST, USER, Credentials((plain,), allow_agent=False))
    assert tried_sources(err.value) == [plain]
    assert agent.opened == 0


def test_identities_only_limits_agent_keys_to_the_files_pub(
    tmp_path: Path, keys: Keys, agent: type[FakeAgent]
) -> None:
    plain = save(keys.a, tmp_path / "id_plain", pub=True)
    agent.keys = (keys.c, keys.a)
    transport = FakeTransport()
    with pytest.raises(AuthenticationFailed) as err:
        authenticate(transport, HOST, USER, Credentials((plain,), identities_only=True))
    assert tried_sources(err.value) == [plain, "ssh-agent"]
    assert transport.offered == [keys.a.asbytes(), keys.a.asbytes()]  # never keys.c


def test_without_identities_only_every_agent_key_is_tried(
    tmp_path: Path, keys: Keys, agent: type[FakeAgent]
) -> None:
    plain = save(keys.a, tmp_path / "id_plain", pub=True)
    agent.keys = (keys.c, keys.b)
    transport = FakeTransport()
    with pytest.raises(AuthenticationFailed):
        authenticate(transport, HOST, USER, Credentials((plain,)))
    assert transport.offered == [keys.a.asbytes(), keys.c.asbytes(), keys.b.asbytes()]


def test_identities_only_agent_key_saves_the_passphrase(
    tmp_path: Path, keys: Keys, agent: type[FakeAgent]
) -> None:
    locked = save(keys.b, tmp_path / "id_locked", "sesame", pub=True)
    agent.keys = (keys.c, keys.b)
    asker = Asker()
    transport = FakeTransport(accept=[keys.b])
    authenticate(transport, HOST, USER, Credentials((locked,), identities_only=True, prompt=asker))
    assert transport.offered == [keys.b.asbytes()]
    assert asker.asked == []


def test_default_identities_when_none_configured(tmp_path: Path, keys: Keys) -> None:
    save(keys.a, tmp_path / "home" / ".ssh" / "id_ecdsa")
    save(keys.b, tmp_path / "home" / ".ssh" / "not_a_default_name")
    transport = FakeTransport(accept=[keys.a])
    authenticate(transport, HOST, USER, Credentials(allow_agent=False))
    assert transport.authenticated and transport.offered == [keys.a.asbytes()]


def test_no_keys_at_all(agent: type[FakeAgent]) -> None:
    transport = FakeTransport(accept=[])
    for creds in (Credentials(allow_agent=False), Credentials()):
        with pytest.raises(AuthenticationFailed, match="no identity file and no ssh-agent keys") as err:
            authenticate(transport, HOST, USER, creds)
        assert f"{USER}@{HOST}" in err.value.message
        assert "authorized_keys" in (err.value.hint or "")
    assert transport.offered == []


def test_server_without_publickey_or_kbd(tmp_path: Path, keys: Keys) -> None:
    plain = save(keys.a, tmp_path / "id_plain")
    transport = FakeTransport(methods=["password"])
    with pytest.raises(AuthenticationFailed, match=r"does not accept public keys \(it allows: password\)"):
        authenticate(transport, HOST, USER, Credentials((plain,), allow_agent=False))


def test_accepted_key_but_server_wants_password(tmp_path: Path, keys: Keys) -> None:
    plain = save(keys.a, tmp_path / "id_plain")
    transport = FakeTransport(accept=[keys.a], then=["password"])
    with pytest.raises(AuthenticationFailed, match="also wants password"):
        authenticate(transport, HOST, USER, Credentials((plain,), allow_agent=False))


# --- passphrases ---------------------------------------------------------------------------------


def test_passphrase_asked_once_per_file_and_shared_between_hops(
    tmp_path: Path, keys: Keys
) -> None:
    locked = save(keys.b, tmp_path / "id_locked", "sesame")
    asker = Asker({"passphrase": "sesame"})
    creds = Credentials((locked, locked), allow_agent=False, prompt=asker)
    first = FakeTransport(accept=[keys.b])
    authenticate(first, HOST, USER, creds)
    assert first.authenticated and len(asker.asked) == 1
    # the next hop (keys only, like a compute node) uses the cached passphrase: no prompt
    node = FakeTransport(accept=[keys.b])
    authenticate(node, "node1", USER, creds.keys_only())
    authenticate(FakeTransport(accept=[keys.b]), "node2", USER, creds)
    assert node.authenticated and len(asker.asked) == 1


def test_each_locked_file_asks_for_its_own_passphrase(
    tmp_path: Path, keys: Keys
) -> None:
    one = save(keys.a, tmp_path / "id_one", "first")
    two = save(keys.b, tmp_path / "id_two", "second")
    asker = Asker({"id_one": "first", "id_two": "second"})
    transport = FakeTransport(accept=[keys.b])
    authenticate(transport, HOST, USER, Credentials((one, two), allow_agent=False, prompt=asker))
    assert [p.text for p in asker.asked] == [
        f"Enter passphrase for key '{one}': ", f"Enter passphrase for key '{two}': ",
    ]
    assert transport.offered == [keys.a.asbytes(), keys.b.asbytes()]


def test_wrong_passphrase(tmp_path: Path, keys: Keys) -> None:
    locked = save(keys.b, tmp_path / "id_locked", "sesame")
    creds = Credentials((locked,), allow_agent=False, prompt=Asker({"passphrase": "wrong"}))
    with pytest.raises(AuthenticationFailed, match="wrong passphrase"):
        authenticate(FakeTransport(accept=[keys.b]), HOST, USER, creds)


def test_keys_only_hop_does_not_ask_for_a_passphrase(
    tmp_path: Path, keys: Keys
) -> None:
    locked = save(keys.b, tmp_path / "id_locked", "sesame")
    creds = Credentials((locked,), allow_agent=False, prompt=Asker()).keys_only()
    with pytest.raises(AuthenticationFailed, match="takes keys only"):
        authenticate(FakeTransport(accept=[keys.b]), HOST, USER, creds)


def test_passphrase_protected_file_real_loader(tmp_path: Path, keys: Keys) -> None:
    locked = save(keys.b, tmp_path / "id_locked", "sesame")
    asker = Asker({"passphrase": "sesame"})
    transport = FakeTransport(accept=[keys.b])
    authenticate(transport, HOST, USER, Credentials((locked,), allow_agent=False, prompt=asker))
    assert transport.authenticated and len(asker.asked) == 1


def test_configured_identity_file_that_is_damaged(tmp_path: Path) -> None:
    bad = tmp_path / "id_bad"
    bad.write_text("not a key\n")
    with pytest.raises(AuthenticationFailed, match="cannot read identity file"):
        authenticate(FakeTransport(), HOST, USER, Credentials((str(bad),), allow_agent=False))


# --- keyboard-interactive ------------------------------------------------------------------------


def test_partial_success_then_keyboard_interactive(tmp_path: Path, keys: Keys) -> None:
    plain = save(keys.a, tmp_path / "id_plain")
    asker = Asker({"code": "123456"})
    round_ = ("Duo two-factor", "Enter the code", [("Verification code: ", False)])
    transport = FakeTransport(accept=[keys.a], then=[KBD], rounds=[round_])
    authenticate(transport, HOST, USER, Credentials((plain,), allow_agent=False, prompt=asker))
    assert transport.authenticated
    assert asker.asked == [
        Prompt(HOST, USER, "Verification code: ", False, "Duo two-factor", "Enter the code")
    ]


def test_prompt_echo_flag_is_passed_on(tmp_path: Path, keys: Keys) -> None:
    plain = save(keys.a, tmp_path / "id_plain")
    asker = Asker({"Username": "123456"})
    transport = FakeTransport(accept=[keys.a], then=[KBD], rounds=[("", "", [("Username: ", True)])])
    authenticate(transport, HOST, USER, Credentials((plain,), allow_agent=False, prompt=asker))
    assert [p.echo for p in asker.asked] == [True]


def test_keyboard_interactive_only_server(agent: type[FakeAgent], keys: Keys) -> None:
    agent.keys = (keys.c,)
    asker = Asker({"code": "123456"})
    transport = FakeTransport(methods=[KBD])
    authenticate(transport, HOST, USER, Credentials(prompt=asker))
    assert transport.authenticated and len(asker.asked) == 1


def test_empty_round_is_answered_without_asking(tmp_path: Path, keys: Keys) -> None:
    plain = save(keys.a, tmp_path / "id_plain")
    asker = Asker({"code": "123456"})
    rounds: list[Round] = [
        ("", "Welcome, PAM says hello", []),
        ("", "", [("Verification code: ", False)]),
        ("", "", []),
    ]
    transport = FakeTransport(accept=[keys.a], then=[KBD], rounds=rounds)
    authenticate(transport, HOST, USER, Credentials((plain,), allow_agent=False, prompt=asker))
    assert transport.authenticated and len(asker.asked) == 1


def test_second_round_after_an_answer_fails_without_asking_again(tmp_path: Path, keys: Keys) -> None:
    plain = save(keys.a, tmp_path / "id_plain")
    asker = Asker({"code": "000000"})
    round_ = ("", "", [("Verification code: ", False)])
    transport = FakeTransport(accept=[keys.a], then=[KBD], rounds=[round_, round_, round_])
    with pytest.raises(AuthenticationFailed, match="refused") as err:
        authenticate(transport, HOST, USER, Credentials((plain,), allow_agent=False, prompt=asker))
    assert "asked again" in err.value.message
    assert len(asker.asked) == 1 and not transport.authenticated


def test_refused_answer(tmp_path: Path, keys: Keys) -> None:
    plain = save(keys.a, tmp_path / "id_plain")
    asker = Asker({"code": "000000"})
    transport = FakeTransport(accept=[keys.a], then=[KBD])
    with pytest.raises(AuthenticationFailed) as err:
        authenticate(transport, HOST, USER, Credentials((plain,), allow_agent=False, prompt=asker))
    assert f"{USER}@{HOST}" in err.value.message
    assert "the answer to its keyboard-interactive prompt was refused" in err.value.message
    assert "TOTP" in (err.value.hint or "")
    assert len(asker.asked) == 1


def test_keys_only_credentials_never_prompt(tmp_path: Path, keys: Keys) -> None:
    plain = save(keys.a, tmp_path / "id_plain")
    asker = Asker({"code": "123456"})
    creds = Credentials((plain,), allow_agent=False, prompt=asker).keys_only()
    assert creds.prompt is None
    transport = FakeTransport(accept=[keys.a], then=[KBD])
    with pytest.raises(AuthenticationFailed, match="takes keys only") as err:
        authenticate(transport, "node1", USER, creds)
    assert "Verification code" in err.value.message
    assert asker.asked == []


def test_failure_is_an_authentication_failure(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(AuthenticationFailed) as err:
        authenticate(FakeTransport(), HOST, USER, Credentials(allow_agent=False))
    assert err.value.exit_code == 4


# --- $HPCNB_ASKPASS --------------------------------------------------------------------------------


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "askpass.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def askpass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    def use(body: str) -> str:
        program = script(tmp_path, body)
        monkeypatch.setenv(ASKPASS_ENV, program)
        return program

    yield use


def test_askpass_first_line_and_environment(askpass: Callable[[str], str]) -> None:
    askpass('printf "%s|%s|%s\\nsecond line\\n" "$1" "$HPCNB_ASKPASS_ECHO" "$HPCNB_ASKPASS_HOST"\n')
    assert askpass_or_terminal(Prompt(HOST, USER, "Code: ", False)) == f"Code: |0|{HOST}"
    assert askpass_or_terminal(Prompt("node1", USER, "Name: ", True)) == "Name: |1|node1"


def test_askpass_empty_output_is_an_empty_answer(askpass: Callable[[str], str]) -> None:
    askpass("exit 0\n")
    assert askpass_or_terminal(Prompt(HOST, USER, "Code: ", False)) == ""


def test_askpass_failure(askpass: Callable[[str], str]) -> None:
    program = askpass("echo 'cancelled by user' >&2\nexit 3\n")
    with pytest.raises(AuthenticationFailed, match="exited 3: cancelled by user") as err:
        askpass_or_terminal(Prompt(HOST, USER, "Code: ", False))
    assert program in err.value.message


def test_askpass_missing_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ASKPASS_ENV, str(tmp_path / "no-such-program"))
    with pytest.raises(AuthenticationFailed, match=r"HPCNB_ASKPASS program .* failed"):
        askpass_or_terminal(Prompt(HOST, USER, "Code: ", False))


def test_askpass_answers_the_servers_prompt(
    tmp_path: Path, keys: Keys, askpass: Callable[[str], str]
) -> None:
    askpass("echo 123456\n")
    plain = save(keys.a, tmp_path / "id_plain")
    transport = FakeTransport(accept=[keys.a], then=[KBD])
    authenticate(transport, HOST, USER, Credentials((plain,), allow_agent=False))  # default prompt
    assert transport.authenticated and transport.answers == [["123456"]]
