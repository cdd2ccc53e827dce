"""JobRequest validation: every refusal is one UsageError line naming the flag and the value."""

from __future__ import annotations

import dataclasses
import math

import pytest

from hpcnb.config import ClusterConfig
from hpcnb.errors import UsageError
from hpcnb.request import JobRequest, build_request, parse_mem, parse_time
from hpcnb.schedulers.base import hms
from hpcnb.schedulers.pbs import pbs_mem
from hpcnb.schedulers.slurm import slurm_mem, slurm_time

CFG = ClusterConfig(name="t", scheduler="slurm", source="test", login_host="h")


def refused(flag: str, **kwargs: object) -> str:
    with pytest.raises(UsageError) as info:
        build_request(CFG, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert flag in message, message
    assert "\n" not in message
    return message


def test_defaults() -> None:
    r = build_request(CFG)
    assert r == JobRequest(name="hpcnb", walltime_seconds=3600)
    seconds = r.walltime_seconds
    assert (hms(seconds), slurm_time(seconds), r.mem_mb) == ("01:00:00", "01:00:00", None)


@pytest.mark.parametrize(
    ("hours", "seconds"), [(1, 3600), (0.5, 1800), ("2", 7200), ("1.25", 4500), (48, 172800)]
)
def test_hours_ok(hours: object, seconds: int) -> None:
    assert build_request(CFG, hours=hours).walltime_seconds == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "hours", [0, -1, "abc", math.nan, "nan", math.inf, "inf", -math.inf, 1e9, 24 * 366, 0.001, True, "", [1]]
)
def test_hours_refused(hours: object) -> None:
    message = refused("--hours", hours=hours)
    assert repr(hours) in message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("01:00:00", 3600),
        ("90:00", 5400),
        ("1-00:00:00", 86400),
        ("100:00:00", 360000),
        ("2-12:30:00", 217800),
    ],
)
def test_time_ok(text: str, seconds: int) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "1:60:00",
        "00:00:30",
        "1h",
        "1:2:3:4",
        "366-00:00:00",
        "1-24:00:00",
        "",
        "00:61",
        "-1:00:00",
        "1:00:00\n",
    ],
)
def test_time_refused(text: str) -> None:
    refused("--time", time=text)


def test_hours_and_time_exclusive() -> None:
    message = refused("--hours", hours=1, time="01:00:00")
    assert "--time" in message


def test_max_hours_from_config() -> None:
    cfg = dataclasses.replace(CFG, max_hours=12)
    assert build_request(cfg, hours=12).walltime_seconds == 43200
    assert "12 hours" in refused_cfg(cfg, "--hours", hours=13)
    refused_cfg(cfg, "--time", time="13:00:00")


def refused_cfg(cfg: ClusterConfig, flag: str, **kwargs: object) -> str:
    with pytest.raises(UsageError) as info:
        build_request(cfg, **kwargs)  # type: ignore[arg-type]
    assert flag in str(info.value)
    return str(info.value)


BAD_NAMES = [
    "a'b",
    'a"b',
    "$(id)",
    "`id`",
    "a;b",
    "a b",
    "a\nb",
    "debug\n#SBATCH --x",
    "ünïcode",
    "-x",
    "",
    "a" * 65,
    "a/b",
    "a$b",
    "x\x00",
    "\u2028",
    "a\tb",
    "debug\n",
    " debug",
]


@pytest.mark.parametrize("value", BAD_NAMES)
@pytest.mark.parametrize("flag", ["partition", "account", "name"])
def test_names_refused(flag: str, value: str) -> None:
    message = refused(f"--{flag}", **{flag: value})
    assert repr(value) in message


@pytest.mark.parametrize("value", ["debug", "gpu-a100", "m1234", "x-abc123", "skx.dev", "A_b"])
def test_names_ok(value: str) -> None:
    r = build_request(CFG, partition=value, account=value, name=value)
    assert (r.partition, r.account, r.name) == (value, value, value)


def test_config_defaults_used_and_checked() -> None:
    cfg = dataclasses.replace(CFG, partition="shared", account="m1", notebook_dir="~/nb")
    r = build_request(cfg)
    assert (r.partition, r.account, r.notebook_dir) == ("shared", "m1", "~/nb")
    assert build_request(cfg, partition="debug").partition == "debug"


def test_account_required() -> None:
    cfg = dataclasses.replace(CFG, account_required=True, docs="https://example.org")
    message = refused_cfg(cfg, "--account")
    assert "https://example.org" in message
    assert build_request(cfg, account="m1").account == "m1"


@pytest.mark.parametrize("flag", ["cpus", "gpus"])
@pytest.mark.parametrize("value", [0, -1, 4097, 1.5, "two", True, "1e3", None.__class__])
def test_counts_refused(flag: str, value: object) -> None:
    refused(f"--{flag}", **{flag: value})


def test_counts_ok() -> None:
    r = build_request(CFG, cpus=4, gpus="2")
    assert (r.cpus, r.gpus) == (4, 2)


@pytest.mark.parametrize(
    ("text", "mb", "slurm", "pbs"),
    [
        ("4G", 4096, "4G", "4gb"),
        ("500M", 500, "500M", "500mb"),
        ("16GB", 16384, "16G", "16gb"),
        ("1.5g", 1536, "1536M", "1536mb"),
        ("2048K", 2, "2M", "2mb"),
        ("1T", 1048576, "1024G", "1024gb"),
        ("8GiB", 8192, "8G", "8gb"),
    ],
)
def test_mem_normalised(text: str, mb: int, slurm: str, pbs: str) -> None:
    r = build_request(CFG, mem=text)
    assert (r.mem_mb, slurm_mem(r.mem_mb), pbs_mem(r.mem_mb)) == (mb, slurm, pbs)
    assert parse_mem(text) == mb


@pytest.mark.parametrize("text", ["4", "4X", "G", "-4G", "0G", "4 G B", "4G;id", "", "9999999T", "nanG"])
def test_mem_refused(text: str) -> None:
    refused("--mem", mem=text)


@pytest.mark.parametrize("value", ["a\nb", "", "x\x00", "a" * 5000])
def test_notebook_dir_refused(value: str) -> None:
    refused("--notebook-dir", notebook_dir=value)


def test_formatters() -> None:
    assert hms(3599) == "00:59:59"
    assert hms(172800) == "48:00:00"
    assert slurm_time(86399) == "23:59:59"
    assert slurm_time(90061) == "1-01:01:01"
