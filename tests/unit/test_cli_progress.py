"""The status line (hpcnb.cli.status): what a sequence of events writes, on a terminal and not."""

from __future__ import annotations

from hpcnb.cli.status import CLEAR_LINE, Event, StatusLine, line, message, render
from hpcnb.schedulers import JobState, JobStatus


def pending(reason: str | None = "Priority", start: str | None = None) -> JobStatus:
    return JobStatus(job_id="7", state=JobState.PENDING, raw_state="PENDING", reason=reason,
                     expected_start=start)


RUNNING = JobStatus(job_id="7", state=JobState.RUNNING, raw_state="RUNNING", node="node01")


def test_queued_line_has_reason_expected_start_and_elapsed():
    event = Event("queued", pending("Resources", "2030-01-01T10:00:00"), 65)
    assert line(event) == ("[1:05] queued (Resources: waiting for free nodes), "
                           "expected start 2030-01-01T10:00:00")


def test_no_reason_words_are_left_out():
    for reason in (None, "None", "(null)", ""):
        assert message(Event("queued", pending(reason))) == "queued"


def test_unknown_reason_is_shown_as_is():
    assert message(Event("queued", pending("SomeNewReason"))) == "queued (SomeNewReason)"


def test_phases_after_the_queue():
    assert message(Event("starting", RUNNING)) == "running on node01; starting notebook"
    assert message(Event("unknown", None)) == "the scheduler does not answer; still waiting"
    assert message(Event("tunnel", detail="127.0.0.1:8888")) == "tunnel up on 127.0.0.1:8888"
    assert line(Event("ready"), elapsed=3725) == "[1:02:05] notebook ready"


def test_not_a_tty_writes_each_new_message_once_without_control_characters():
    events = [Event("queued", pending(), 0), Event("queued", pending(), 5), Event("queued", pending(), 10),
              Event("starting", RUNNING, 15), Event("starting", RUNNING, 15.2)]
    out = render(events, is_tty=False, final="[0:16] tunnel up on 127.0.0.1:5")
    assert out == ("[0:00] queued (Priority: other jobs have priority)\n"
                   "[0:15] running on node01; starting notebook\n"
                   "[0:16] tunnel up on 127.0.0.1:5\n")
    assert "\r" not in out and "\x1b" not in out


def test_a_tty_rewrites_one_line_and_ends_it_with_a_newline():
    events = [Event("queued", pending(), 0), Event("starting", RUNNING, 12)]
    out = render(events, is_tty=True, final="[0:13] tunnel up")
    assert out.count(CLEAR_LINE) == 3
    assert out.count("\n") == 1 and out.endswith("[0:13] tunnel up\n")
    assert out.startswith(CLEAR_LINE + "[0:00] queued")


def test_tick_refreshes_elapsed_on_a_tty_only():
    for tty in (True, False):
        out: list[str] = []
        status = StatusLine(out.append, tty)
        status.update(Event("queued", pending(), 0))
        status.tick(42)
        text = "".join(out)
        assert ("[0:42] queued" in text) is tty


def test_a_note_keeps_the_status_line_on_a_tty():
    out: list[str] = []
    status = StatusLine(out.append, True)
    status.update(Event("queued", pending(None), 3))
    status.note("the slurm controller does not answer; will keep trying")
    text = "".join(out)
    assert text.endswith(CLEAR_LINE + "the slurm controller does not answer; will keep trying\n[0:03] queued")


def test_finish_without_an_open_line_writes_only_the_final_message():
    assert render([], is_tty=True) == ""
    assert render([], is_tty=True, final="done") == "done\n"


def test_done_repeats_nothing_off_a_tty_and_closes_the_line_on_one():
    out: list[str] = []
    status = StatusLine(out.append, False)
    status.update(Event("ready", None, 14))
    status.done(Event("ready"), 14.2)
    status.done(Event("tunnel", detail="127.0.0.1:9"), 15)
    assert "".join(out) == "[0:14] notebook ready\n[0:15] tunnel up on 127.0.0.1:9\n"
    out.clear()
    status = StatusLine(out.append, True)
    status.update(Event("starting", RUNNING, 3))
    status.done(Event("tunnel", detail="127.0.0.1:9"), 4)
    assert "".join(out).endswith(CLEAR_LINE + "[0:04] tunnel up on 127.0.0.1:9\n")
