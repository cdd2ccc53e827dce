"""code-server from the npm registry, once per machine, for `hpcnb submit --app code-server`
(issue 14). The nodes share the file system, so one install in CODE_SERVER_PREFIX serves them all;
the test's cluster config puts its bin folder on PATH with a setup line, as a site's
`module load code-server` would.

Why this version and these steps (each found by trying, 2026-12):
  * code-server 4.100.3 is the newest whose npm package runs on Node.js 20 (the machine's; 4.103 and
    later say engines node 22). Its postinstall builds VS Code's native modules: build-essential,
    libx11-dev, libxkbfile-dev, libsecret-1-dev, libkrb5-dev (.ci/run installs them), and node-gyp
    with the headers of the installed Node.js (npm_config_nodedir=/usr: nodejs.org is not reachable);
    node-pty's postinstall runs `npx node-gyp`, which waits for a "yes" unless npm_config_yes=true.
  * @vscode/ripgrep's postinstall downloads rg from api.github.com (not reachable). It first looks in
    $TMPDIR/vscode-ripgrep-cache-<its version>/ for the release tarball (its lib/download.js), so
    Debian's ripgrep 13.0.0 (the same release VS Code pins, v13.0.0-10) is put there as that tarball.
About 35 s on 2 cores; a later `up` finds `code-server --version` and does nothing.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from .proc import TestbedError, sh
from .topology import CODE_SERVER_PREFIX

VERSION = "4.100.3"
RIPGREP_PACKAGE = "1.15.11"  # @vscode/ripgrep in code-server 4.100.3's lib/vscode/npm-shrinkwrap.json
RIPGREP_ASSET = "ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz"
BIN = CODE_SERVER_PREFIX / "node_modules" / ".bin"


def installed() -> bool:
    exe = BIN / "code-server"
    if not exe.exists():
        return False
    proc = sh([str(exe), "--version"], check=False, timeout=60,
              env={**os.environ, "HOME": tempfile.gettempdir()})
    return proc.returncode == 0 and VERSION in proc.stdout


def _seed_ripgrep(cache_root: Path) -> None:
    rg = shutil.which("rg")
    if rg is None:
        raise TestbedError("ripgrep is not installed (apt-get install ripgrep; .ci/run does)")
    cache = cache_root / f"vscode-ripgrep-cache-{RIPGREP_PACKAGE}"
    cache.mkdir(parents=True, exist_ok=True)
    with tarfile.open(cache / RIPGREP_ASSET, "w:gz") as tar:
        tar.add(rg, arcname="rg")


def ensure_installed() -> float | None:
    """Install code-server unless it is there; the seconds it took, or None."""
    if installed():
        return None
    started = time.monotonic()
    shutil.rmtree(CODE_SERVER_PREFIX, ignore_errors=True)
    CODE_SERVER_PREFIX.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="hpcnb-code-server-") as tmp:
        _seed_ripgrep(Path(tmp))
        env = {**os.environ, "TMPDIR": tmp, "npm_config_yes": "true", "npm_config_nodedir": "/usr",
               "npm_config_cache": f"{tmp}/npm-cache", "npm_config_update_notifier": "false",
               "npm_config_fund": "false", "npm_config_audit": "false"}
        proc = sh(["npm", "install", "--prefix", str(CODE_SERVER_PREFIX), "--unsafe-perm",
                   f"code-server@{VERSION}"], check=False, env=env, timeout=1200)
    if proc.returncode != 0 or not installed():
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise TestbedError(f"npm install code-server@{VERSION} exited {proc.returncode}: {tail}")
    CODE_SERVER_PREFIX.chmod(0o755)
    return time.monotonic() - started
