"""OpenPBS 23.06 built from source once per machine, for the testbed's PBS cluster (issue 11).

Debian has no PBS server package, so `up` builds the source tarball kept beside the repository
(../shared/openpbs/, README there) into OPENPBS_PREFIX, about 3.5 min on 2 cores, and writes a stamp
naming the tarball's sha256 and the configure flags. A later `up` whose stamp matches uses the build
as it is; `down` never touches it (like the JupyterLab venv). Nothing outside OPENPBS_PREFIX is
written: `make install` would put pbs.sh/pbs.csh in /etc/profile.d and pbs.service in systemd's unit
directory (src/cmds/scripts/Makefile.am: sysprofiledir, unitfiledir), so both point inside the prefix.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from .proc import TestbedError, sh
from .topology import OPENPBS_BUILD_LOG, OPENPBS_PREFIX

OPENPBS_VERSION = "23.06.06"
TARBALL_NAME = "openpbs-23.06.06-cd7ab5e.tar.gz"
# github openpbs/openpbs commit cd7ab5edaf03dcac2f1cb9e2f42d75eb117d468a (../shared/openpbs/README.md)
TARBALL_SHA256 = "4bd90664619a2c498fd6c112f1fab8dc2c8e2a4c5fce4bf191e637fb1e4ce34d"
STAMP = OPENPBS_PREFIX / ".hpcnb-testbed-build"
BUILD_DIR = Path("/var/tmp/hpcnb-openpbs-build")

# Each host has its own pbs.conf, so there is no right compiled-in one: the default names a file that
# is never written, and a program started without PBS_CONF_FILE fails rather than read another
# host's settings (pitfall 3: scripts such as pbs_db_env read ${PBS_CONF_FILE:-/etc/pbs.conf}).
# Each pbs.conf sets PBS_HOME and PBS_TMPDIR, so the build does not depend on where they are.
CONFIGURE_FLAGS = (
    f"--prefix={OPENPBS_PREFIX}",
    f"--with-pbs-conf-file={OPENPBS_PREFIX}/etc/pbs.conf",
    "--with-python=/usr",
)
# Debian's python3 and python3-config, not a pyenv shim that may be first in root's PATH.
BUILD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Non-root qsub authenticates with reserved ports through these (pitfall 4).
SETUID_PROGRAMS = ("sbin/pbs_iff", "sbin/pbs_rcp")


def tarball() -> Path:
    """HPCNB_OPENPBS_TARBALL, else ../shared/openpbs/ beside the repository (never copied into it)."""
    given = os.environ.get("HPCNB_OPENPBS_TARBALL")
    if given:
        return Path(given)
    repo = Path(__file__).resolve().parents[3]
    return repo.parent / "shared" / "openpbs" / TARBALL_NAME


def stamp_text() -> str:
    return f"sha256 {TARBALL_SHA256}\nconfigure {' '.join(CONFIGURE_FLAGS)}\n"


def built() -> bool:
    try:
        return STAMP.read_text() == stamp_text() and (OPENPBS_PREFIX / "sbin" / "pbs_server").exists()
    except FileNotFoundError:
        return False


def ensure_built() -> float | None:
    """Build and install unless the stamp matches; the seconds it took, or None when cached."""
    if built():
        return None
    source = tarball()
    if not source.exists():
        raise TestbedError(f"OpenPBS is not built in {OPENPBS_PREFIX} and its source {source} is "
                           "missing (set HPCNB_OPENPBS_TARBALL)")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != TARBALL_SHA256:
        raise TestbedError(f"{source}: sha256 {digest}, expected {TARBALL_SHA256}")
    started = time.monotonic()
    print(f"openpbs: building {TARBALL_NAME} into {OPENPBS_PREFIX} (about 4 min, once per machine)",
          flush=True)
    shutil.rmtree(OPENPBS_PREFIX, ignore_errors=True)
    shutil.rmtree(BUILD_DIR, ignore_errors=True)
    BUILD_DIR.mkdir(parents=True)
    OPENPBS_PREFIX.parent.mkdir(parents=True, exist_ok=True)
    OPENPBS_BUILD_LOG.write_text("")
    sh(["tar", "-xzf", str(source), "-C", str(BUILD_DIR), "--strip-components=1"])
    jobs = str(os.cpu_count() or 2)
    _step(["./autogen.sh"])
    _step(["./configure", *CONFIGURE_FLAGS])
    _step(["make", f"-j{jobs}"], timeout=3600)
    _step(["make", "install", f"sysprofiledir={OPENPBS_PREFIX}/etc/profile.d",
           f"unitfiledir={OPENPBS_PREFIX}/lib/systemd"])
    for program in SETUID_PROGRAMS:
        (OPENPBS_PREFIX / program).chmod(0o4755)
    STAMP.write_text(stamp_text())
    shutil.rmtree(BUILD_DIR, ignore_errors=True)
    return time.monotonic() - started


def _step(argv: list[str], timeout: float = 900) -> None:
    """One build step in BUILD_DIR at low priority; its output goes to OPENPBS_BUILD_LOG."""
    env = {**os.environ, "PATH": BUILD_PATH}
    with OPENPBS_BUILD_LOG.open("a") as log:
        log.write(f"\n$ {' '.join(argv)}\n")
    proc = sh(["sh", "-c", 'cd "$1" && shift && exec nice -n 19 "$@" >>"$0" 2>&1',
               str(OPENPBS_BUILD_LOG), str(BUILD_DIR), *argv], check=False, env=env, timeout=timeout)
    if proc.returncode != 0:
        tail = OPENPBS_BUILD_LOG.read_text().splitlines()[-15:]
        raise TestbedError(f"OpenPBS build: `{' '.join(argv)}` exited {proc.returncode}; "
                           f"end of {OPENPBS_BUILD_LOG}:\n" + "\n".join(tail))
