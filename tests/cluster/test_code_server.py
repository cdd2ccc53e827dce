"""`--app code-server` on the testbed (issue 14): code-server from the npm registry (installed by
`cluster up`: tests/testbed/testbed/code_server.py) started by the job, its URL answering with its
login page through the tunnel, the password made on the node and in no argv and no scheduler record,
logging in with it, and attach / list / cancel as for a notebook: on Slurm over TCP and over a
unix socket, and on OpenPBS."""

from __future__ import annotations

import http.client
import urllib.parse

import pytest
from fixtures import ssh
from hpcnb_driver import Hpcnb, argvs, derived_config

pytestmark = pytest.mark.cluster

# As a site's `module load code-server` would (the nodes share the file system).
APPS = {"code-server": {"setup": ["export PATH=/opt/hpcnb-testbed/code-server/node_modules/.bin:$PATH"]}}
CLUSTERS = {"cs-slurm": "testbed", "cs-slurm-socket": "testbed-socket", "cs-openpbs": "testbed-openpbs"}
# The scheduler's copy of the job, asked on the login node (port 2222: OpenPBS's login, with its
# PBS_CONF_FILE; tests/cluster/test_openpbs.py).
SLURM_SCRIPT = ("scontrol write batch_script {job} -", 22)
JOB_RECORD = {"cs-slurm": SLURM_SCRIPT, "cs-slurm-socket": SLURM_SCRIPT,
              "cs-openpbs": ("qstat -f {job}", 2222)}


@pytest.fixture
def hpcnb(testbed, tmp_path) -> Hpcnb:
    config = derived_config(tmp_path / "config.toml", testbed,
                            {name: (base, {"apps": APPS}) for name, base in CLUSTERS.items()})
    return Hpcnb(tmp_path / "state", config=config, home=tmp_path)


def get(port: int, path: str, cookie: str = "") -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode(errors="replace")
    finally:
        conn.close()


def log_in(port: int, password: str) -> str:
    """POST code-server's login form; the session cookie it sets."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/login", body=urllib.parse.urlencode({"password": password}),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        cookie = response.getheader("Set-Cookie") or ""
        assert response.status == 302 and cookie.startswith("code-server-session="), response.status
        return cookie.split(";", 1)[0]
    finally:
        conn.close()


@pytest.mark.parametrize("cluster", sorted(CLUSTERS))
def test_code_server_runs_as_an_app(hpcnb, cluster):
    job_id = hpcnb.submit(cluster, "--app", "code-server", "--hours", "0.25")
    try:
        with hpcnb.attach(job_id, cluster) as attached:
            assert "token=" not in attached.url
            password = attached.password()
            status, headers, _ = get(attached.port, "/")
            assert status == 302 and headers["Location"].endswith("login")  # it wants the password
            status, _, page = get(attached.port, "/login")
            assert status == 200 and "code-server login" in page and 'type="password"' in page
            cookie = log_in(attached.port, password)
            status, headers, _ = get(attached.port, "/", cookie)
            assert status == 302 and "folder=" in headers["Location"], headers  # the folder it opens
            status, _, page = get(attached.port, "/" + headers["Location"].lstrip("./"), cookie)
            assert status == 200 and "workbench" in page  # VS Code itself
            assert [pid for pid, argv in argvs().items() if password.encode() in argv] == []
            command, port = JOB_RECORD[cluster]
            record = ssh(command.format(job=job_id), port=port)
            assert record.returncode == 0 and "hpcnb" in record.stdout, record.stderr
            assert password not in record.stdout
        [row] = [r for r in hpcnb.list_json(cluster) if r["job_id"] == job_id]
        assert row["state"] == "running" and row["node"]
    finally:
        cancelled = hpcnb.run("cancel", job_id, "--cluster", cluster)
    assert cancelled.returncode == 0, cancelled.stderr
    assert job_id not in [r["job_id"] for r in hpcnb.list_json(cluster)]
