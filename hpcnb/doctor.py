"""`hpcnb doctor`: is this cluster ready for `hpcnb submit`? One small check per question.

Each check returns a Check(name, ok, detail, fix). The checks run in order over the command's one
connection (a hpcnb.cluster.Cluster); a check whose prerequisite failed (no config, no SSH) is reported as
skipped. All commands run as argv through the Remote: `sh -c` / `bash -c` with a fixed script, the
config's setup lines being the only site code (they are the user's own shell code, exactly as the
job script runs them).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass

from hpcnb.errors import (
    AuthenticationFailed,
    ConfigError,
    HostKeyError,
    HpcnbError,
    KeeperError,
    SSHError,
    last_line,
)

EXIT_CONFIG, EXIT_SSH, EXIT_HOST_KEY, EXIT_CLUSTER = 3, 4, 5, 6

JUPYTER_TIMEOUT = 180.0  # module loads and conda activation on a busy shared file system


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    exit_code: int = 0  # the documented exit code of this kind of failure
    skipped: bool = False

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("exit_code")
        return data


def passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def failed(name: str, detail: str, fix: str, exit_code: int = EXIT_CLUSTER) -> Check:
    return Check(name, False, detail, fix, exit_code)


def skipped(name: str, why: str) -> Check:
    return Check(name, False, f"skipped: {why}", None, 0, skipped=True)


def exit_code(checks: list[Check]) -> int:
    """0 when every check passed, else the exit code of the first failure."""
    for check in checks:
        if not check.ok and not check.skipped:
            return check.exit_code or 1
    return 0


# ------------------------------------------------------------------ config


def check_config(name: str | None):
    """(Check, ClusterConfig | None)."""
    from hpcnb.config import default_cluster_name, load_cluster

    try:
        cfg = load_cluster(name)
    except ConfigError as exc:
        from hpcnb.paths import user_config_file

        fix = exc.hint or f"edit {user_config_file()} (or run `hpcnb config init`)"
        return failed("config", exc.message, fix, EXIT_CONFIG), None
    where = f" from {cfg.source}"
    login = f", login {cfg.login_host}" if cfg.login_host else ""
    chosen = "" if name else f" (default: {default_cluster_name()})"
    return passed("config", f"cluster {cfg.name}{chosen}{where} ({cfg.scheduler}{login})"), cfg


def check_account(cfg) -> Check:
    if not cfg.account_required or cfg.account:
        return passed("account", f"account {cfg.account}" if cfg.account else "not required")
    return failed("account", f"{cfg.name} charges every job to an account and none is set",
                  f'add account = "..." under [clusters.{cfg.name}] in your config, or pass '
                  "--account to submit", EXIT_CONFIG)


# ------------------------------------------------------------------ SSH


def check_ssh(ctx) -> Check:
    cfg = ctx.cfg
    target = f"{cfg.user + '@' if cfg.user else ''}{cfg.login_host}:{cfg.port or 22}"
    try:
        remote = ctx.remote
        check_login = getattr(remote, "check_login", None)
        if check_login is not None:
            check_login()  # a kept connection (hpcnb.keeper) logs in on first use: now
    except HostKeyError as exc:
        return failed("ssh", exc.message,
                      exc.hint or "check the key's fingerprint with the centre's documentation, then "
                      "run again with --accept-new-host-key (a changed key is never accepted)",
                      EXIT_HOST_KEY)
    except SSHError as exc:
        if isinstance(exc, AuthenticationFailed):
            fix = ("check `user` and `identity_file` in the config, load the key into your agent "
                   "(ssh-add), or log in once with `ssh` to see what the site asks for (MFA?)")
        else:
            fix = (f"check login_host/port ({target}); are you on the site's network or VPN? "
                   f"try: ssh -p {cfg.port or 22} {target.rsplit(':', 1)[0]}")
        return failed("ssh", exc.message, exc.hint or fix, EXIT_SSH)
    except KeeperError as exc:
        return failed("ssh", f"kept connection: {exc.message}",
                      exc.hint or 'see `hpcnb connections`; persist = "no" logs in without a keeper',
                      KeeperError.exit_code)
    user = getattr(remote, "user", None) or cfg.user or "?"
    return passed("ssh", f"{user}@{cfg.login_host}:{cfg.port or 22} (host key known, authenticated); "
                         f"{backend(cfg, remote)}")


def backend(cfg, remote) -> str:
    """Which SSH backend, why, and (OpenSSH) its version and master."""
    describe = getattr(remote, "describe", None)
    what = describe() if callable(describe) else "paramiko"
    why = (f'ssh_backend = "openssh" in {cfg.source}' if cfg.ssh_backend == "openssh"
           else 'the default; ssh_backend = "openssh" uses your own OpenSSH login')
    return f"backend {what} ({why})"


# ------------------------------------------------------------------ scheduler


def check_commands(ctx) -> Check:
    required, optional = ctx.scheduler.commands, ctx.scheduler.optional_commands
    names = " ".join(required + optional)
    script = f'for c in {names}; do command -v "$c" >/dev/null 2>&1 || echo "$c"; done'
    result = ctx.remote.run(["sh", "-c", script], timeout=30)
    if result.exit_status != 0:
        why = f"`sh -c` exited {result.exit_status}: {last_line(result.stderr)}"
        return failed("scheduler commands", why,
                      "check that your login shell works non-interactively (no prompts in ~/.bashrc)")
    missing = result.stdout.split()
    hard = [c for c in required if c in missing]
    soft = [c for c in optional if c in missing]
    if hard:
        return failed("scheduler commands", f"not on PATH on {ctx.cfg.login_host}: {', '.join(hard)}",
                      f"is scheduler = {ctx.cfg.scheduler!r} right for this cluster? if the commands come "
                      "from a module, ask the site why they are not on the default PATH")
    detail = ", ".join(required + tuple(c for c in optional if c not in soft))
    if soft:
        detail += f" (missing, optional: {', '.join(soft)})"
    return passed("scheduler commands", detail)


def check_partition(ctx) -> Check:
    cfg, sched = ctx.cfg, ctx.scheduler
    word = "QOS" if cfg.partition_flag == "--qos" else sched.queue_word
    argv = sched.queues_argv(cfg)
    if argv is None:
        return passed(word, f"{sched.name} has none to check")
    result = ctx.remote.run(argv, timeout=30)
    if result.exit_status != 0:
        if cfg.partition is None:
            return passed(word, f"none set (the scheduler's default); `{' '.join(argv)}` failed")
        return failed(word, f"`{' '.join(argv)}` exited {result.exit_status}: {last_line(result.stderr)}",
                      f"run `{' '.join(argv)}` on {cfg.login_host} and check {word} {cfg.partition!r}")
    names, default = sched.parse_queues(result.stdout)
    shown = ", ".join(n + ("*" if n == default else "") for n in names[:12])
    shown += ", ..." if len(names) > 12 else ""
    if cfg.partition is None:
        return passed(word, f"none set, the scheduler's default{f' ({default})' if default else ''} is "
                            f"used; available: {shown}")
    if cfg.partition in names:
        return passed(word, f"{cfg.partition} exists (available: {shown})")
    return failed(word, f"{word} {cfg.partition!r} from the config does not exist on {cfg.name} "
                        f"(available: {shown})",
                  f'set partition = "<one of the above>" under [clusters.{cfg.name}], or pass --partition')


# ------------------------------------------------------------------ Jupyter


def jupyter_script(setup: tuple[str, ...], python: str, jupyter: str) -> str:
    """bash: the setup lines one by one (stopping at the first that fails), then the interpreter,
    jupyter_server and `jupyter <lab|notebook> --version`, as the job's launcher would find them."""
    lines = [f"HPCNB_PYTHON={shlex.quote(python)}"]
    for number, line in enumerate(setup, 1):
        lines.append(line)
        lines.append(
            f'rc=$?; if [ "$rc" -ne 0 ]; then echo "hpcnb-doctor: setup line {number} exited $rc:" '
            f"{shlex.quote(line)} >&2; exit 90; fi")
    lines += [
        'if ! command -v "$HPCNB_PYTHON" >/dev/null 2>&1; then',
        '  echo "hpcnb-doctor: $HPCNB_PYTHON not found after the setup lines; PATH=$PATH" >&2; exit 91',
        "fi",
        'echo "python: $(command -v "$HPCNB_PYTHON")"',
        '"$HPCNB_PYTHON" -c "import jupyter_server" || '
        '{ echo "hpcnb-doctor: $HPCNB_PYTHON cannot import jupyter_server" >&2; exit 92; }',
        f'if command -v jupyter >/dev/null 2>&1; then jupyter {jupyter} --version; '
        f'else "$HPCNB_PYTHON" -m jupyter {jupyter} --version; fi || '
        f'{{ echo "hpcnb-doctor: jupyter {jupyter} does not start" >&2; exit 93; }}',
    ]
    return "\n".join(lines) + "\n"


def check_jupyter(ctx) -> Check:
    cfg = ctx.cfg
    where = "this machine" if ctx.is_local else cfg.login_host
    script = jupyter_script(cfg.setup, cfg.python, cfg.jupyter)
    try:
        result = ctx.remote.run(["bash", "-c", script], timeout=JUPYTER_TIMEOUT)
    except HpcnbError as exc:  # a timeout, or bash missing (local)
        return failed("jupyter", exc.message, "run the setup lines by hand and see where they hang")
    if result.exit_status == 0:
        out = result.stdout.strip().splitlines()
        python = next((ln[8:] for ln in out if ln.startswith("python: ")), cfg.python)
        version = out[-1] if out else "?"
        return passed("jupyter", f"jupyter {cfg.jupyter} {version} with {python} after "
                                 f"{len(cfg.setup)} setup line(s), on {where}")
    why = last_line(result.stderr) or f"exit {result.exit_status}"
    mine = [ln for ln in result.stderr.splitlines() if ln.startswith("hpcnb-doctor: ")]
    detail = mine[-1][len("hpcnb-doctor: "):] if mine else why
    if result.exit_status == 90:
        first_error = _first(result.stderr)
        if first_error and first_error not in detail:
            detail += f" ({first_error})"
        fix = (f"fix that line of `setup` in {cfg.source} (it runs on {where} here and at the start of "
               "every job)")
    elif result.exit_status == 91:
        fix = f"add a setup line that puts {cfg.python} on PATH (module load ..., conda activate ...)"
    else:
        fix = (f"run `hpcnb jupyter install --cluster {cfg.name}`: it makes a Python env with "
               "JupyterLab where the site recommends and adds it to your config's `setup`")
    return failed("jupyter", detail, fix)


# ------------------------------------------------------------------ all


def _first(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines()
             if ln.strip() and not ln.startswith("hpcnb-doctor: ")]
    return lines[0] if lines else ""


def local_tools() -> Check:
    import shutil

    missing = [tool for tool in ("bash", "jupyter") if not shutil.which(tool)]
    if missing:
        return failed("local tools", f"not on PATH: {', '.join(missing)}",
                      "pip install 'hpcnb[local]' (Jupyter) in this environment; the local backend "
                      "runs its job script with bash")
    return passed("local tools", "bash and jupyter on PATH")


def run(name: str | None, make_context: Callable, on_check: Callable[[Check], None] = lambda c: None
        ) -> list[Check]:
    """Every check for cluster `name`, in order; on_check sees each as soon as it is known."""
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        on_check(check)

    config, cfg = check_config(name)
    add(config)
    if cfg is None:
        return checks
    if cfg.scheduler != "local":
        add(check_account(cfg))
    with make_context(cfg) as ctx:
        if ctx.is_local:
            add(local_tools())
            add(check_jupyter(ctx))
            return checks
        ssh = check_ssh(ctx)
        add(ssh)
        if not ssh.ok:
            for later in ("scheduler commands", "partition", "jupyter"):
                add(skipped(later, "no SSH connection"))
            return checks
        commands = check_commands(ctx)
        add(commands)
        if commands.ok:
            add(check_partition(ctx))
        else:
            add(skipped("partition", "scheduler commands missing"))
        add(check_jupyter(ctx))
    return checks
