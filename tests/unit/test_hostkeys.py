"""hpcnb.ssh.hostkeys.KnownHosts against known_hosts files in tmp_path: plain, hashed, [host]:port,
wildcard and negated entries, @revoked and @cert-authority markers, changed and unknown keys,
accept-new, missing and damaged files, and the host key algorithms offered first.

Real keys, generated in-process once per module (ECDSA and RSA: paramiko cannot generate ED25519).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from hpcnb.errors import HostKeyError
from hpcnb.ssh import hostkeys
from hpcnb.ssh.hostkeys import KnownHosts, fingerprint, host_key_name


@dataclass(frozen=True)
class Keys:
    ecdsa: paramiko.PKey
    ecdsa2: paramiko.PKey
    rsa: paramiko.PKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate(), paramiko.RSAKey.generate(1024))


def line(patterns: str, key: paramiko.PKey, marker: str = "") -> str:
    return f"{marker + ' ' if marker else ''}{patterns} {key.get_name()} {key.get_base64()}\n"


def hashed(name: str, salt: bytes = b"0123456789abcdefghij") -> str:
    """What `ssh-keygen -H` writes: |1|base64(salt)|base64(HMAC-SHA1(salt, name))."""
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def write(path: Path, *lines: str) -> str:
    path.write_text("".join(lines))
    return str(path)


def known(tmp_path: Path, *lines: str) -> KnownHosts:
    return KnownHosts([write(tmp_path / "known_hosts", *lines)])


# --- matching -----------------------------------------------------------------------------------


def test_plain_name_matches(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("other.example.org,login.example.org", keys.ecdsa))
    assert kh.verify(["login.example.org"], keys.ecdsa) is None
    assert kh.verify(["LOGIN.example.ORG"], keys.ecdsa) is None  # host names are case-insensitive


def test_any_of_several_names_matches(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("node1", keys.ecdsa))
    assert kh.verify(["10.0.0.1", "node1"], keys.ecdsa) is None


def test_hashed_name_matches(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line(hashed("login.example.org"), keys.ecdsa))
    assert kh.verify(["login.example.org"], keys.ecdsa) is None
    assert len(kh.for_names(["login.example.org"])) == 1


def test_hashed_entry_for_another_name_does_not_match(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line(hashed("other.example.org"), keys.ecdsa))
    assert kh.for_names(["login.example.org"]) == []
    with pytest.raises(HostKeyError, match="unknown host key"):
        kh.verify(["login.example.org"], keys.ecdsa)


def test_damaged_hashed_entry_matches_nothing(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("|1|not-base64!|x", keys.ecdsa), line("|1|abc", keys.ecdsa))
    assert kh.for_names(["login.example.org"]) == []


def test_hashed_port_entry(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line(hashed("[login.example.org]:2222"), keys.ecdsa))
    assert kh.verify([host_key_name("login.example.org", 2222)], keys.ecdsa) is None


def test_host_key_name() -> None:
    assert host_key_name("login", 22) == "login"
    assert host_key_name("login", 2222) == "[login]:2222"


def test_port_entry_matches_only_that_port(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("[login.example.org]:2222", keys.ecdsa))
    assert kh.verify([host_key_name("login.example.org", 2222)], keys.ecdsa) is None
    assert kh.for_names(["login.example.org"]) == []
    assert kh.for_names([host_key_name("login.example.org", 2223)]) == []


def test_port_22_entry_does_not_match_another_port(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("login.example.org", keys.ecdsa))
    with pytest.raises(HostKeyError, match="unknown host key"):
        kh.verify([host_key_name("login.example.org", 2222)], keys.ecdsa)


@pytest.mark.parametrize(
    ("pattern", "name", "hit"),
    [
        ("*.example.org", "login.example.org", True),
        ("*.example.org", "example.org", False),
        ("login?.example.org", "login1.example.org", True),
        ("login?.example.org", "login12.example.org", False),
        ("*", "anything", True),
        ("[login]:*", "[login]:2222", True),  # brackets are literal, not a character class
        ("[login]:*", "l", False),
    ],
)
def test_wildcards(tmp_path: Path, keys: Keys, pattern: str, name: str, hit: bool) -> None:
    kh = known(tmp_path, line(pattern, keys.ecdsa))
    assert bool(kh.for_names([name])) is hit


def test_negated_pattern_excludes(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("*.example.org,!bad.example.org", keys.ecdsa))
    assert kh.verify(["good.example.org"], keys.ecdsa) is None
    assert kh.for_names(["bad.example.org"]) == []
    with pytest.raises(HostKeyError, match="unknown host key"):
        kh.verify(["bad.example.org"], keys.ecdsa)


def test_negation_alone_matches_nothing(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("!bad.example.org", keys.ecdsa))
    assert kh.for_names(["good.example.org"]) == []


# --- markers ------------------------------------------------------------------------------------


def test_revoked_key_is_refused(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("login.example.org", keys.ecdsa), line("*", keys.ecdsa, "@revoked"))
    with pytest.raises(HostKeyError, match="revoked") as err:
        kh.verify(["login.example.org"], keys.ecdsa, accept_new=True)
    assert f"{tmp_path / 'known_hosts'}:2" in str(err.value)
    assert fingerprint(keys.ecdsa) in str(err.value)


def test_revoked_entry_for_another_key_does_not_block(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("*", keys.ecdsa2, "@revoked"), line("login.example.org", keys.ecdsa))
    assert kh.verify(["login.example.org"], keys.ecdsa) is None


def test_cert_authority_lines_are_skipped(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("*.example.org", keys.ecdsa, "@cert-authority"))
    assert kh.entries == []
    with pytest.raises(HostKeyError, match="unknown host key"):
        kh.verify(["login.example.org"], keys.ecdsa)


# --- changed and unknown keys -------------------------------------------------------------------


def test_changed_key_is_refused_even_with_accept_new(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "known_hosts"
    kh = known(tmp_path, "# comment\n", line("login.example.org", keys.ecdsa))
    before = path.read_text()
    for accept_new in (False, True):
        with pytest.raises(HostKeyError, match="HOST KEY CHANGED") as err:
            kh.verify(["login.example.org"], keys.ecdsa2, accept_new=accept_new)
        text = str(err.value)
        assert fingerprint(keys.ecdsa2) in text and fingerprint(keys.ecdsa) in text
        assert f"{path}:2" in text
        assert "ssh-keygen -R 'login.example.org'" in (err.value.hint or "")
    assert path.read_text() == before


def test_a_changed_key_names_the_address_reached_and_login_nodes_only_for_such_a_name(
        tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("login.example.org", keys.ecdsa))
    with pytest.raises(HostKeyError) as err:
        kh.verify(["login.example.org"], keys.ecdsa2, reached="10.1.2.3")
    assert str(err.value).startswith("HOST KEY CHANGED for login.example.org (reached at 10.1.2.3): ")
    assert "login node" not in (err.value.hint or "")  # one address: no invitation to add the key
    with pytest.raises(HostKeyError) as err:
        kh.verify(["login.example.org"], keys.ecdsa2, reached="10.1.2.3", several_nodes=True)
    assert "another of the login nodes behind the name login.example.org" in (err.value.hint or "")
    with pytest.raises(HostKeyError) as err:
        kh.verify(["10.1.2.3"], keys.ecdsa2, reached="10.1.2.3")
    assert "reached at" not in str(err.value)  # the name is the address


def test_changed_key_in_a_later_file_is_refused(tmp_path: Path, keys: Keys) -> None:
    first = write(tmp_path / "kh1", line("other", keys.ecdsa))
    second = write(tmp_path / "kh2", line("login", keys.ecdsa))
    with pytest.raises(HostKeyError, match="HOST KEY CHANGED"):
        KnownHosts([first, second]).verify(["login"], keys.ecdsa2, accept_new=True)


def test_key_in_any_file_is_accepted(tmp_path: Path, keys: Keys) -> None:
    first = write(tmp_path / "kh1", "")
    second = write(tmp_path / "kh2", line("login", keys.rsa))
    assert KnownHosts([first, second]).verify(["login"], keys.rsa) is None


def test_unknown_host(tmp_path: Path, keys: Keys) -> None:
    path = write(tmp_path / "known_hosts", line("other", keys.ecdsa))
    with pytest.raises(HostKeyError) as err:
        KnownHosts([path]).verify(["login.example.org"], keys.ecdsa)
    exc = err.value
    assert "unknown host key for login.example.org" in exc.message
    assert f"ECDSA {fingerprint(keys.ecdsa)}" in exc.message
    assert path in exc.message
    assert "--accept-new-host-key" in (exc.hint or "")
    assert exc.exit_code == 5


def test_fingerprint_is_openssh_sha256(keys: Keys) -> None:
    digest = hashlib.sha256(base64.b64decode(keys.rsa.get_base64())).digest()
    fp = fingerprint(keys.rsa)
    assert fp == "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    assert not fp.endswith("=") and len(fp) == len("SHA256:") + 43


# --- accept-new ---------------------------------------------------------------------------------


def test_accept_new_creates_the_first_file(tmp_path: Path, keys: Keys) -> None:
    first = tmp_path / "new" / "dir" / "known_hosts"
    second = write(tmp_path / "kh2", line("other", keys.rsa))
    kh = KnownHosts([str(first), second])
    names = [host_key_name("login.example.org", 2222)]
    assert kh.verify(names, keys.ecdsa, accept_new=True) == str(first)
    expected = f"[login.example.org]:2222 {keys.ecdsa.get_name()} {keys.ecdsa.get_base64()}\n"
    assert first.read_text() == expected
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    assert Path(second).read_text() == line("other", keys.rsa)
    # the same object and a fresh read both know it now
    assert kh.verify(names, keys.ecdsa) is None
    assert KnownHosts([str(first), second]).verify(names, keys.ecdsa) is None
    # and a different key of the same type is now a changed key
    with pytest.raises(HostKeyError, match="HOST KEY CHANGED"):
        KnownHosts([str(first)]).verify(names, keys.ecdsa2, accept_new=True)


def test_accept_new_appends_after_a_line_without_newline(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(line("other", keys.rsa).rstrip("\n"))
    KnownHosts([str(path)]).verify(["login", "10.0.0.1"], keys.ecdsa, accept_new=True)
    assert path.read_text().splitlines() == [
        line("other", keys.rsa).rstrip("\n"),
        line("login,10.0.0.1", keys.ecdsa).rstrip("\n"),
    ]
    assert KnownHosts([str(path)]).verify(["10.0.0.1"], keys.ecdsa) is None


def test_accept_new_keeps_an_existing_files_mode(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("")
    path.chmod(0o644)
    KnownHosts([str(path)]).verify(["login"], keys.ecdsa, accept_new=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == line("login", keys.ecdsa)


# --- files --------------------------------------------------------------------------------------


def test_missing_file_is_empty(tmp_path: Path, keys: Keys) -> None:
    kh = KnownHosts([str(tmp_path / "nope"), str(tmp_path / "nope2")])
    assert kh.entries == []
    with pytest.raises(HostKeyError, match="unknown host key"):
        kh.verify(["login"], keys.ecdsa)


def test_unreadable_path_is_a_host_key_error(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(HostKeyError, match="cannot read known_hosts file"):
        KnownHosts([str(tmp_path / "dir")])


def test_tilde_is_expanded(tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path / "known_hosts", line("login", keys.ecdsa))
    kh = KnownHosts(["~/known_hosts"])
    assert kh.paths == [str(tmp_path / "known_hosts")]
    assert kh.verify(["login"], keys.ecdsa) is None


def test_damaged_lines_are_skipped(tmp_path: Path, keys: Keys) -> None:
    blob = keys.ecdsa.get_base64()
    kh = known(
        tmp_path,
        "\n",
        "   # a comment\n",
        "onlytwo ssh-rsa\n",
        "login ecdsa-sha2-nistp256 !!!not-base64!!!\n",
        f"login ecdsa-sha2-nistp256 {blob[:20]}\n",
        f"login ssh-rsa {blob}\n",  # the blob of another key type
        "@unknown-marker login ssh-rsa AAAA\n",
        "@revoked\n",
        line("login", keys.ecdsa),
    )
    assert [(e.lineno, e.patterns) for e in kh.entries] == [(9, ("login",))]
    assert kh.verify(["login"], keys.ecdsa) is None


@pytest.mark.parametrize("key_type", ["ssh-dss", "sk-ssh-ed25519@openssh.com", "ssh-unknown-type"])
def test_lines_of_unknown_key_types_are_skipped(tmp_path: Path, keys: Keys, key_type: str) -> None:
    kh = known(tmp_path, f"login {key_type} {keys.ecdsa.get_base64()}\n", line("login", keys.ecdsa))
    assert [e.lineno for e in kh.entries] == [2]
    assert kh.verify(["login"], keys.ecdsa) is None


def test_entries_carry_their_origin(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("a,b", keys.ecdsa), line("c", keys.rsa, "@revoked"))
    first, second = kh.entries
    assert first.where == f"{tmp_path / 'known_hosts'}:1" and first.patterns == ("a", "b")
    assert not first.revoked and second.revoked and second.key == keys.rsa


# --- algorithms ---------------------------------------------------------------------------------

OFFERED = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


def test_preferred_algorithms_rsa_known(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("login", keys.rsa))
    assert kh.preferred_algorithms(["login"], OFFERED) == [
        "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256",
    ]


def test_preferred_algorithms_ecdsa_known(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("login", keys.ecdsa))
    assert kh.preferred_algorithms(["login"], OFFERED) == [
        "ecdsa-sha2-nistp256", "ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa",
    ]


def test_preferred_algorithms_only_offered_ones(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("login", keys.rsa))
    offered = ("ssh-ed25519", "rsa-sha2-256")
    assert kh.preferred_algorithms(["login"], offered) == ["rsa-sha2-256", "ssh-ed25519"]


def test_preferred_algorithms_unknown_or_revoked_unchanged(tmp_path: Path, keys: Keys) -> None:
    kh = known(tmp_path, line("other", keys.rsa), line("login", keys.ecdsa, "@revoked"))
    assert kh.preferred_algorithms(["login"], OFFERED) == list(OFFERED)


def test_key_label(keys: Keys) -> None:
    assert hostkeys.key_label(keys.ecdsa) == "ECDSA"
    assert hostkeys.key_label(keys.rsa) == "RSA"
