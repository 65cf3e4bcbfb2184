"""A crash between a delivery and its record, end to end: the daemon as a process, a real
broker, real apprise deliveries to a local HTTP receiver, and kill -9 right after the
receiver accepted a page, eight times in a row."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

from sentinel.config.inventory import Device
from sentinel.incidents.store import read_events, read_incidents

from daemon import LOADED, DaemonProcess, Publisher, alarm, wait_until
from receivers import HttpReceiver, ReceivedRequest
from servers import Mosquitto

KILLS = 8
MARKS = ("【重发】", "[RESENT] ")


def detectors(count: int) -> list[Device]:
    """Smoke detectors in as many different buildings (no two make a confirmed fire)."""
    chosen: dict[tuple[str, str], Device] = {}
    for device in LOADED.inventory.values():
        if device.kind == "smoke":
            chosen.setdefault((device.compound, device.building), device)
    assert len(chosen) >= count, "the shipped inventory has too few buildings"
    return list(chosen.values())[:count]


def marked(request: ReceivedRequest) -> bool:
    body = request.json
    assert isinstance(body, dict), request.body[:200]
    return str(body["title"]).startswith(MARKS) and str(body["message"]).startswith(
        tuple(m.strip() for m in MARKS))


def outbox(db: Path) -> list[tuple[str, str, int]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.execute("SELECT key, status, unknown FROM outbox ORDER BY id"))
    finally:
        conn.close()


class KillOnAccept:
    """Kills the daemon (SIGKILL) as soon as the receiver has taken its next request."""

    # After the request is recorded, the receiver answers at once: this much later the
    # page has been accepted and the daemon is busy recording the answer.
    AFTER = 0.002

    def __init__(self, hooks: HttpReceiver, daemon: DaemonProcess) -> None:
        self._hooks = hooks
        self._daemon = daemon
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def arm(self) -> None:
        seen = len(self._hooks.requests)

        def watch() -> None:
            try:
                self._hooks.wait_for(seen + 1, 20)
                time.sleep(self.AFTER)
                assert self._daemon.proc is not None
                self._daemon.proc.kill()
            except BaseException as exc:  # reported by wait()
                self.error = exc
        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()

    def wait(self) -> None:
        assert self._thread is not None
        self._thread.join(25)
        if self.error is not None:
            raise self.error
        assert self._daemon.proc is not None
        self._daemon.proc.wait(10)


def test_kill_9_right_after_a_page_is_accepted_eight_times_delivers_each_at_most_twice(
        mosquitto: Mosquitto, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """kill -9 as soon as the receiver has accepted a page (a new smoke alarm's, or a
    resend), eight times in a row: every page (by Idempotency-Key) arrives at most twice,
    every second copy is marked as a repeat, and after the last restart nothing is left
    pending."""
    started = time.monotonic()
    with HttpReceiver() as hooks:
        state = tmp_path / "state"
        daemon = DaemonProcess(state, mosquitto.port, notify_url=hooks.url("json", "/page"),
                               escalation__tick_interval="0.2")
        daemons.append(daemon)
        pub = Publisher(mosquitto.port)
        killer = KillOnAccept(hooks, daemon)
        alarms = iter(detectors(KILLS))
        published = 0
        for _ in range(KILLS):
            # Whatever the receiver takes first after this start (a resend of the round
            # before, or the page of a new alarm), the daemon dies right after.
            killer.arm()
            try:
                daemon.start()
            except RuntimeError:
                pass  # killed while starting: it was resending
            else:
                pub.publish_readings(alarm(next(alarms).id))
                published += 1
            killer.wait()
        daemon.start()
        db = state / "incidents.sqlite3"
        assert wait_until(lambda: all(status != "pending" for _, status, _ in outbox(db))
                          and len(outbox(db)) > 0, 20), outbox(db)
        time.sleep(1.0)  # anything sent a third time would show now
        # A request cut off by the kill (headers, no body) brought nobody a message.
        # sentinel's own incidents (a latency budget broken by the kills) page too, held
        # for the storm window: the alarms' pages are what this test follows.
        alarms_paged = {i.id for i in read_incidents(db) if i.kind != "system"}
        requests = [r for r in hooks.requests if isinstance(r.json, dict) and str(
            r.headers.get("idempotency-key")).split("/")[0] in alarms_paged]
        rows = [row for row in outbox(db) if row[0].split("/")[0] in alarms_paged]
        copies = Counter(str(r.headers.get("idempotency-key")) for r in requests)
        report = (f"pages={len(rows)} deliveries={len(requests)} "
                  f"twice={sum(n == 2 for n in copies.values())} "
                  f"none={sum(key not in copies for key, _, _ in rows)} "
                  f"unknown={sum(s == 'unknown' for _, s, _ in rows)}")
        print(f"\nkill-9 after acceptance x{KILLS}: alarms={published} {report}")
        assert max(copies.values()) <= 2, copies
        assert set(copies) <= {key for key, _, _ in rows}
        for key, count in copies.items():
            if count == 2:
                first, second = [r for r in requests
                                 if r.headers.get("idempotency-key") == key]
                assert marked(second), (key, second.json)
                assert not marked(first) or first.received_at < second.received_at
        assert any(n == 2 for n in copies.values()), "no kill left a page to resend"
        # Every alarm paged someone; every page ended sent or of unknown outcome.
        incidents = {key.split("/")[0] for key, _, _ in rows}
        assert published >= 2 and len(incidents) == published, (published, incidents)
        assert {status for _, status, _ in rows} <= {"sent", "unknown"}, rows
        for key, status, unknown in rows:
            assert status != "unknown" or unknown == 2, (key, status, unknown)
        # A page that was never resent arrived once; an unknown outcome is in the audit.
        events = read_events(db)
        unknown_keys = {e.data.get("key") for e in events if e.type == "notification_unknown"
                        and e.incident_id in alarms_paged}
        assert {key for key, _, unknown in rows if unknown} == unknown_keys
    pub.close()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 60
