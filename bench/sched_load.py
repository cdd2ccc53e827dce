"""Scheduler queries and SSH handshakes per hpcnb command, seen only for the bench's own key.

A fresh key is added to hpcuser's authorized_keys with `command="<wrapper>"`: connections made with
that key (and only those: other engineers use hpcuser too) run their commands with a directory of
counting wrappers (squeue, sacct, sbatch, ...) first in PATH. Each wrapper logs one line and execs
the real command. SSH handshakes are the sshd logs' `Accepted publickey` lines with the key's
fingerprint. The same forced command runs the key's SFTP sessions with an external sftp-server that
logs each file it opens (`-e -l INFO`, to a file: the testbed's sshd serves SFTP with internal-sftp
at its default level, which logs no opens, and its config is not the bench's to change), so the
reads of a job's files are counted too. Everything is removed again by `CountingKey.remove()`.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from testbed import TB, WORK, login_run

WRAPPED = ("squeue", "sacct", "sbatch", "scancel", "scontrol", "qstat", "qsub", "qdel")
SSHD_LOGS = {h: TB / "log" / f"sshd-{h}.log" for h in ("login1", "node01", "node02")}


class CountingKey:
    def __init__(self) -> None:
        self.key = WORK / "id_ed25519_count"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hpcnb-bench-count",
                        "-f", str(self.key)], check=True)
        self.pub = Path(str(self.key) + ".pub").read_text().strip()
        fp = subprocess.run(["ssh-keygen", "-l", "-f", str(self.key)], capture_output=True, text=True,
                            check=True).stdout.split()[1]
        self.fingerprint = fp
        self.dir = f".hpcnb-bench-{int(time.time())}"
        self.home = login_run("echo $HOME").strip()
        self.log = f"{self.home}/{self.dir}/calls.log"
        self.hold_flag = f"{self.home}/{self.dir}/hold"
        self.sftp_log = f"{self.home}/{self.dir}/sftp.log"

    def install(self) -> None:
        d = f"{self.home}/{self.dir}"
        wrappers = "\n".join(
            f"cat > {d}/bin/{cmd} <<'EOF'\n#!/bin/sh\n"
            f"echo \"$(date +%s.%N) {cmd} $*\" >> {self.log}\n"
            + (f"[ -e {self.hold_flag} ] && exec /usr/bin/{cmd} --hold \"$@\"\n" if cmd == "sbatch" else "")
            + f"exec /usr/bin/{cmd} \"$@\"\nEOF\nchmod 755 {d}/bin/{cmd}"
            for cmd in WRAPPED)
        forced = (f"#!/bin/sh\ncase \"$SSH_ORIGINAL_COMMAND\" in\n"
                  f"  internal-sftp|sftp*)\n"
                  f"    exec /usr/lib/openssh/sftp-server -e -l INFO 2>>{self.sftp_log} ;;\nesac\n"
                  f"PATH={d}/bin:$PATH; export PATH\n"
                  f"exec \"${{SHELL:-/bin/sh}}\" -c \"$SSH_ORIGINAL_COMMAND\"\n")
        login_run(f"set -e; mkdir -p {d}/bin; {wrappers}\n"
                  f"cat > {d}/forced <<'EOF'\n{forced}EOF\nchmod 755 {d}/forced\n"
                  f": > {self.log}; : > {self.sftp_log}\n"
                  f"echo 'command=\"{d}/forced\" {self.pub}' >> ~/.ssh/authorized_keys")
        self._line = f'command="{d}/forced" {self.pub}'

    def ensure(self) -> None:
        """Put the key's line back if something rewrote authorized_keys (`cluster up` does, and
        every pytest session of the other engineers runs it)."""
        tag = self.pub.split()[1]
        login_run(f"grep -qF '{tag}' ~/.ssh/authorized_keys || echo '{self._line}' >> ~/.ssh/authorized_keys")

    def remove(self) -> None:
        tag = self.pub.split()[1]
        login_run(f"grep -v -F '{tag}' ~/.ssh/authorized_keys > ~/.ssh/ak.bench.tmp; "
                  f"cat ~/.ssh/ak.bench.tmp > ~/.ssh/authorized_keys; rm -f ~/.ssh/ak.bench.tmp; "
                  f"rm -rf {self.home}/{self.dir}", check=False)

    def hold_sbatch(self, on: bool) -> None:
        login_run(f"touch {self.hold_flag}" if on else f"rm -f {self.hold_flag}")

    def calls(self) -> list[tuple[float, str]]:
        out = login_run(f"cat {self.log}")
        rows = []
        for line in out.splitlines():
            stamp, _, rest = line.partition(" ")
            rows.append((float(stamp), rest))
        return rows

    def sftp_opens(self) -> list[str]:
        """The paths the key's SFTP sessions opened so far (sftp-server's `open "PATH" flags ...`
        lines, a failed open of a missing file included), in order."""
        out = login_run(f"cat {self.sftp_log}")
        return re.findall(r'\bopen "([^"]*)" flags', out)

    def reset(self) -> None:
        login_run(f": > {self.log}")

    def log_marks(self) -> dict[str, int]:
        return {h: p.stat().st_size if p.exists() else 0 for h, p in SSHD_LOGS.items()}

    def handshakes_since(self, marks: dict[str, int]) -> dict[str, int]:
        counts = {}
        for host, path in SSHD_LOGS.items():
            with open(path, "rb") as fh:
                start = marks.get(host, 0)
                fh.seek(start if start <= path.stat().st_size else 0)  # `cluster up` truncates
                text = fh.read().decode(errors="replace")
            counts[host] = len(re.findall(rf"Accepted publickey .*{re.escape(self.fingerprint)}", text))
        return counts
