"""Time to notebook: `hpcnb submit` to the URL answering, split into phases; jupyter-forward's try."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from testbed import HPCNB, JOBS, LOGIN, WORK, cancel, hpcnb_env, log, login_run, read_handshake

JF = Path("/tmp/hpcnb-bench-jf-venv/bin/jupyter-forward")


def _answers(url: str, token: str) -> bool:
    base = url.split("/lab?")[0]
    req = urllib.request.Request(base + "/api/status", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def slurm_times(job_id: str) -> tuple[float, float]:
    """(submit, start) epoch seconds from sacct (whole seconds)."""
    out = login_run(f"sacct -j {job_id} -X -n -P -o Submit,Start").strip().splitlines()[0]
    fmt = "%Y-%m-%dT%H:%M:%S"
    sub, start = out.split("|")
    return (time.mktime(time.strptime(sub, fmt)), time.mktime(time.strptime(start, fmt)))


def one_submit(cluster: str) -> dict[str, float]:
    """Run `hpcnb submit --no-browser` (attached) once; phases in seconds."""
    lines: list[tuple[float, str]] = []
    t0 = time.time()
    proc = subprocess.Popen([*HPCNB, "submit", "--cluster", cluster, "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=hpcnb_env(),
                            stdin=subprocess.DEVNULL)

    def read_err() -> None:
        for line in proc.stderr:
            lines.append((time.time(), line.rstrip()))

    threading.Thread(target=read_err, daemon=True).start()
    url_line = proc.stdout.readline().strip()
    t_url = time.time()
    job_id = next((m.group(1) for _, s in lines if (m := re.search(r"submitted job (\d+)", s))), None)
    try:
        if job_id:
            JOBS.add(job_id)
        if not url_line:
            raise RuntimeError(f"submit printed no URL: {lines}")
        token = url_line.split("token=")[1]
        while not _answers(url_line, token) and time.time() - t_url < 30:
            time.sleep(0.01)
        t_answer = time.time()
        hs = read_handshake(job_id) or {}
        sub, start = slurm_times(job_id)
        t_submitted = next(t for t, s in lines if "submitted job" in s)
        t_ready = next(t for t, s in lines if "notebook ready" in s)
        started = float(hs.get("started", 0))
        if started < t0 - 5:
            log(f"job {job_id}: stale connection.json (started {started:.0f} < submit {t0:.0f})")
        return {
            "submit to job id": t_submitted - t0,
            "queue wait (sacct Start-Submit, 1 s res.)": start - sub,
            "job start to Jupyter ready (handshake started)": started - start,
            "handshake read (hpcnb saw it)": t_ready - started,
            "tunnel up (URL printed after ready line)": t_url - t_ready,
            "URL answers after printed": t_answer - t_url,
            "Jupyter answering to URL printed": t_url - started,
            "total: submit to URL answering": t_answer - t0,
        }
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if job_id:
            cancel(job_id)


def jupyter_forward(timeout: float = 90) -> tuple[str, float | None]:
    """Try jupyter-forward (own venv under /tmp) on the testbed with --launch-command sbatch-like.
    Returns (what happened, seconds to its tunnel if it got one)."""
    if not JF.exists():
        proc = subprocess.run([sys.executable, "-m", "venv", str(JF.parent.parent)], capture_output=True)
        pip = JF.parent / "pip"
        proc = subprocess.run([str(pip), "install", "-q", "jupyter-forward"], capture_output=True, text=True)
        if proc.returncode != 0 or not JF.exists():
            return f"pip install jupyter-forward failed: {proc.stderr.strip()[-200:]}", None
    home = WORK / "jf-home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "config").write_text(
        f"Host login1\n  HostName {LOGIN}\n  User hpcuser\n"
        "  IdentityFile /var/tmp/hpcnb-testbed/client/id_ed25519_hpcuser\n")
    (home / ".ssh" / "known_hosts").write_text(
        Path("/var/tmp/hpcnb-testbed/client/known_hosts").read_text())
    port = 18888
    argv = [str(JF), "login1", "--port", str(port), "-i", "/var/tmp/hpcnb-testbed/client/id_ed25519_hpcuser",
            "--launch-command", "srun -p debug -t 00:10:00 -J jf-bench"]
    env = {**os.environ, "HOME": str(home), "TERM": "dumb", "BROWSER": "true"}
    t0 = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    out: list[str] = []
    threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True).start()
    took = None
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if any("remote_port" in line for line in out):
            took = time.time() - t0  # it sleeps 3 s after this before "opening the browser"
            break
        time.sleep(0.2)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    login_run("scancel -n jf-bench -u hpcuser", check=False)
    text = "".join(out)
    last = [ln.strip() for ln in text.splitlines() if ln.strip() and not set(ln.strip()) <= set("*─━ ")]
    return (" / ".join(last[-4:])[:400], took)
