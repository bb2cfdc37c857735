"""Silences without an Alertmanager (issue 15): a local maintenance silence made from the console mutes the
incidents it matches, is kept in the notification file (a restarted console applies it from the start, another
process reads the marks), lists and expires; what cannot be a local silence is refused with a reason; and with an
Alertmanager configured but down, adding a silence fails with one sentence instead of hanging."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.config.fleet import Fleet, Node, Receiver, ReceiverKind, Site, Topology
from console.incidents.model import ChangeKind, IncidentChange
from console.notify.notifier import Notifier
from console.notify.schema import NotifyError, notify_path_for
from console.notify.silences import Matcher, SilenceSource
from console.notify.state import NotifyStore, read_marks
from tests.helpers.builders import free_port, make_incident

SITE = "iad-hyperscaler"
FLEET = Fleet(
    sites=(Site(SITE, "hyperscaler"),),
    nodes=(Node("n1", SITE, (), topology=Topology(rack="r1")), Node("n2", SITE, ())),
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return notify_path_for(tmp_path / "incidents.sqlite3")


@pytest.fixture
def notifier(path: Path) -> Iterator[Notifier]:
    notifier = Notifier(FLEET, NotifyStore.open(path), sync_s=0.1)
    notifier.start()
    yield notifier
    notifier.stop()


def test_a_local_silence_mutes_what_it_matches_and_outlives_the_console(notifier: Notifier, path: Path) -> None:
    silence = notifier.add_silence([Matcher("rack", "r1")], 3600, "rack r1 recabling", "ops@example.com")
    assert silence.source is SilenceSource.LOCAL
    in_rack = make_incident("i-1", time.time(), node="n1")
    elsewhere = make_incident("i-2", time.time(), node="n2")
    notifier.submit([IncidentChange(ChangeKind.OPENED, i, i.opened_at) for i in (in_rack, elsewhere)])
    notifier.flush()

    mark = notifier.silence_of(in_rack)
    assert mark is not None
    assert (mark.silence_id, mark.comment, mark.created_by) == (silence.id, "rack r1 recabling", "ops@example.com")
    assert mark.ends_at == pytest.approx(time.time() + 3600, abs=5)
    assert notifier.silence_of(elsewhere) is None
    assert [s.id for s in notifier.silences()] == [silence.id]

    notifier.stop()  # another process reads the file after the console has gone
    marks = read_marks(path, [in_rack, elsewhere], racks={"n1": "r1"})
    assert set(marks) == {"i-1"}
    assert marks["i-1"].to_json()["comment"] == "rack r1 recabling"

    again = Notifier(FLEET, NotifyStore.open(path))
    again.start()
    try:
        assert again.silence_of(in_rack) is not None  # applied from the start, before any change comes in
        expired = again.expire_silence(silence.id)
        assert expired.ends_at <= time.time()
        assert again.silence_of(in_rack) is None
        assert again.silences() == ()
        assert [s.id for s in again.silences(include_expired=True)] == [silence.id]
        with pytest.raises(NotifyError, match="no silence with id nope"):
            again.expire_silence("nope")
    finally:
        again.stop()
    assert read_marks(path, [in_rack], racks={"n1": "r1"}) == {}


@pytest.mark.parametrize(
    ("matchers", "why"),
    [
        ([], "at least one matcher"),
        ([Matcher("gpu", "GPU-1")], "one matcher of the form node|rack|site=value"),
        ([Matcher("node", "n1"), Matcher("site", SITE)], "one matcher"),
        ([Matcher("node", "n.*", is_regex=True)], "one matcher"),
    ],
)
def test_what_cannot_be_a_local_silence_is_refused(notifier: Notifier, matchers: list[Matcher], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        notifier.add_silence(matchers, 3600, "maintenance", "ops")
    assert notifier.silences() == ()


def test_a_silence_needs_a_comment_and_a_duration(notifier: Notifier) -> None:
    with pytest.raises(ValueError, match="comment"):
        notifier.add_silence([Matcher("node", "n1")], 3600, " ", "ops")
    with pytest.raises(ValueError, match="more than 0 s"):
        notifier.add_silence([Matcher("node", "n1")], 0, "maintenance", "ops")


def test_without_a_notification_file_local_silences_are_refused_with_a_reason() -> None:
    notifier = Notifier(FLEET, None)
    with pytest.raises(NotifyError, match="notification file is not open"):
        notifier.add_silence([Matcher("node", "n1")], 3600, "maintenance", "ops")


def test_an_unreachable_alertmanager_fails_a_silence_with_one_sentence(path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    fleet = Fleet(FLEET.sites, FLEET.nodes, receivers=(Receiver(ReceiverKind.ALERTMANAGER, url, name="am"),))
    notifier = Notifier(fleet, NotifyStore.open(path), sync_s=60)
    for running in (False, True):  # from the CLI (no loop of its own yet) and from a running console
        if running:
            notifier.start()
        started = time.monotonic()
        with pytest.raises(NotifyError, match="am cannot be reached"):
            notifier.add_silence([Matcher("node", "n1")], 3600, "maintenance", "ops")
        with pytest.raises(NotifyError, match="am cannot be reached"):
            notifier.silences()
        assert time.monotonic() - started < 5
    notifier.stop()
