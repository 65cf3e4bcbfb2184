"""What the benchmarks in bench/ share: paths (importing this puts src/ and tests/ on
sys.path), logging, CPU accounting from /proc, waiting for a quiet machine, following the
daemon's JSON log, a local webhook, the options every benchmark takes and the end-of-run
report."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "src", ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Broker: no persistence writes while the backlog is published or drained (servers.py
# saves on every 1800 changes, which would rewrite the whole queue ~100 times).
BROKER_EXTRA = ["autosave_on_changes false", "autosave_interval 3600"]
# Log levels of the daemon worth reporting; lines of a FAILING level make a run wrong.
FAILING_LEVELS = ("error", "critical", "exception")
NOTABLE_LEVELS = ("warning", *FAILING_LEVELS)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def nodelay(client: mqtt.Client) -> socket.socket | None:
    """Turn off Nagle's algorithm on a connected client's socket; return the socket."""
    sock = client.socket()
    if not isinstance(sock, socket.socket):
        return None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect_publisher(client_id: str, port: int, max_inflight: int,
                      on_publish: Callable[..., None], name: str) -> mqtt.Client:
    """A connected (CONNACK within 10 s) MQTT 3.1.1 clean-session client for publishing
    from a loop of its own: up to `max_inflight` QoS 1 publishes unacknowledged, no queue
    beyond, TCP_NODELAY. Exits the process with "`name`: no CONNACK" otherwise."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311, clean_session=True)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(HOST, port, keepalive=60)
    nodelay(client)
    deadline = time.monotonic() + 10
    while not client.is_connected():
        client.loop(0.1)
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: no CONNACK")
    return client


# ---------------------------------------------------------------------------------------
# CPU accounting (/proc), a quiet machine
# ---------------------------------------------------------------------------------------


def cpu_self() -> float:
    t = os.times()
    return t.user + t.system


def _stat_cpu(path: str) -> float:
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def proc_cpu(pid: int) -> float:
    """CPU seconds of a process (all threads)."""
    return _stat_cpu(f"/proc/{pid}/stat")


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of a process's main thread (the daemon's event loop)."""
    return _stat_cpu(f"/proc/{pid}/task/{pid}/stat")


def system_busy() -> float:
    """CPU seconds spent busy on all cores since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK  # all but idle and iowait


def wait_for_quiet(max_wait: float, threshold: float = 25.0) -> float:
    """Wait (up to max_wait s) until the machine's busy CPU over 1 s is below threshold %
    (of one core); return the last measured value. Another job hammering the CPU would
    make the figures meaningless."""
    deadline = time.monotonic() + max_wait
    told = False
    while True:
        b0, c0, t0 = system_busy(), cpu_self(), time.monotonic()
        time.sleep(1.0)
        dt = time.monotonic() - t0
        busy = 100 * ((system_busy() - b0) - (cpu_self() - c0)) / dt
        if busy < threshold or time.monotonic() >= deadline:
            if told:
                log(f"  machine {'quiet' if busy < threshold else 'still busy'} "
                    f"({busy:.0f}% CPU)")
            return busy
        if not told:
            log(f"  machine busy ({busy:.0f}% CPU used by other processes): waiting up to "
                f"{max_wait:.0f}s for it to calm down")
            told = True


class CpuWindow:
    """CPU use over a window, 100 % = one core: of named processes (all threads), of one of
    them's main thread (the daemon's event loop), of this benchmark, of the whole machine
    (`system`) and of *foreign* processes (everything else: another job on the machine).
    Starts when made; `stop()` returns the figures, rounded to 0.1."""

    def __init__(self, pids: dict[str, int | None], main_thread: str | None = None) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.main_thread = main_thread
        self._cpu0 = {name: proc_cpu(pid) for name, pid in self.pids.items()}
        self._loop0 = main_thread_cpu(self.pids[main_thread]) if main_thread else 0.0
        self._own0, self._busy0 = time.process_time(), system_busy()
        self.t0 = time.time()
        self.t1 = self.t0

    def stop(self) -> dict[str, float]:
        self.t1 = time.time()
        dt = self.t1 - self.t0
        pct = {name: round(100 * (proc_cpu(pid) - self._cpu0[name]) / dt, 1)
               for name, pid in self.pids.items()}
        pct["bench"] = round(100 * (time.process_time() - self._own0) / dt, 1)
        system = 100 * (system_busy() - self._busy0) / dt
        pct["foreign"] = round(max(0.0, system - sum(pct.values())), 1)
        pct["system"] = round(system, 1)
        if self.main_thread:
            loop = main_thread_cpu(self.pids[self.main_thread]) - self._loop0
            pct[f"{self.main_thread}_main_thread"] = round(100 * loop / dt, 1)
        return pct


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30.0) -> int | None:
    """SIGTERM, then SIGKILL after `timeout` s; reap it and return its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident set size so far (VmHWM of /proc/<pid>/status), MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------
# The daemon's JSON log
# ---------------------------------------------------------------------------------------


class LogTail:
    """Follow the daemon's JSON log file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = ""
        self.events: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("r", encoding="utf-8", errors="replace") as f:
                f.seek(self._offset)
                chunk = f.read()
                self._offset = f.tell()
        except FileNotFoundError:
            return []
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()
        new = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "non_json_output", "level": "error", "text": line[:300]}
            if not isinstance(event, dict):
                event = {"event": "non_json_output", "level": "error", "text": line[:300]}
            new.append(event)
        self.events.extend(new)
        return new

    def find(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") == name), None)


def event_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def daemon_log_findings(events: Iterable[dict[str, Any]], problems: list[str],
                        warnings: list[str]) -> dict[str, int]:
    """Count the log lines of a notable level by `level:event`; add a problem for each
    error-or-worse key and a warning for each warning key; return the counts."""
    notable: dict[str, int] = {}
    for e in events:
        if e.get("level") in NOTABLE_LEVELS:
            key = f"{e.get('level')}:{e.get('event')}"
            notable[key] = notable.get(key, 0) + 1
    for key, count in notable.items():
        (problems if key.startswith(FAILING_LEVELS) else warnings
         ).append(f"daemon log: {count}x {key}")
    return notable


# ---------------------------------------------------------------------------------------
# A local webhook (where the daemon's apprise `json://` notifications go)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    path: str
    headers: dict[str, str]  # lower-cased names
    json: Any  # the parsed body, None if it is not JSON
    received_at: float  # time.time() once the body was read


class _WebhookHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _WebhookServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        at = time.time()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        self.server.webhook._record(WebhookRequest(
            self.path.split("?", 1)[0], {k.lower(): v for k, v in self.headers.items()},
            data, at))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"{}")
        self.close_connection = True

    do_PUT = do_GET = do_POST


class _WebhookServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # socketserver's default backlog is 5: a burst of parallel sends from the daemon can
    # overflow it while this process is busy, and a dropped SYN costs the sender 1 s.
    request_queue_size = 128

    def __init__(self, webhook: Webhook) -> None:
        self.webhook = webhook
        super().__init__((HOST, 0), _WebhookHandler)


class Webhook:
    """Accepts every request (200) on 127.0.0.1 and records when its body was read.

    The same idea as `tests/receivers.py`'s `HttpReceiver` (a thread per connection),
    without its scripted faults and with a listen backlog of 128 instead of 5 (see
    `_WebhookServer`): with 5, a burst of deliveries under load lost a SYN and one request
    arrived a retransmission (1 s) late, which measured the receiver, not the daemon.
    """

    def __init__(self) -> None:
        self.port = 0
        self._lock = threading.Lock()
        self._requests: list[WebhookRequest] = []
        self._server: _WebhookServer | None = None
        self._thread: threading.Thread | None = None

    def _record(self, request: WebhookRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[WebhookRequest]:
        """A snapshot of every request so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def url(self, scheme: str = "json", path: str = "/") -> str:
        """An apprise URL posting here, e.g. ``json://127.0.0.1:PORT/notify``."""
        return f"{scheme}://{HOST}:{self.port}{path}"

    def __enter__(self) -> Self:
        self._server = _WebhookServer(self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"webhook-{self.port}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)


# ---------------------------------------------------------------------------------------
# Command line, running, reporting
# ---------------------------------------------------------------------------------------


def add_shared_options(parser: argparse.ArgumentParser, *, unit: str, window: str,
                       repeat_help: str, json_help: str, drain_timeout: float,
                       drain_timeout_help: str, quiet_wait: float, repeat: int = 3,
                       foreign_warn: float = 15.0, default_fmt: str = "(default {:g})"
                       ) -> None:
    """Add --repeat, --json, --drain-timeout, --foreign-warn, --quiet-wait and --keep.
    `unit` is what one measurement is called ("run"), `window` when other processes' CPU
    counts against it ("during a drain"); `default_fmt` shows a default in the help."""
    parser.add_argument("--repeat", type=int, default=repeat, help=repeat_help)
    parser.add_argument("--json", help=json_help)
    parser.add_argument("--drain-timeout", type=float, default=drain_timeout,
                        help=drain_timeout_help)
    parser.add_argument("--foreign-warn", type=float, default=foreign_warn,
                        help=f"flag a {unit} when processes not started by it used more "
                             f"than this CPU %% {window} {default_fmt.format(foreign_warn)}")
    parser.add_argument("--quiet-wait", type=float, default=quiet_wait,
                        help="before each run wait up to this many seconds for other "
                             "processes to stop using the CPU "
                             + default_fmt.format(quiet_wait))
    parser.add_argument("--keep", action="store_true", help="keep the run directories (logs)")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # SIGINT explicitly too: a shell starting us in the background leaves it ignored.
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def keep_or_remove(base_dir: Path, keep: bool) -> None:
    """At the end: keep the run directories (saying where) or remove them."""
    if keep:
        log(f"run directories (logs) kept in {base_dir}")
    else:
        shutil.rmtree(base_dir, ignore_errors=True)


def log_findings(problems: list[str], warnings: list[str]) -> None:
    for p in problems:
        log(f"  ! {p}")
    for w in warnings:
        log(f"  ~ {w}")


def print_findings(label: str, problems: list[str], warnings: list[str]) -> None:
    for p in problems:
        print(f"  {label} FAILED: {p}")
    for w in warnings:
        print(f"  {label} warning: {w}")


def write_json(path: str, doc: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(doc, indent=2, ensure_ascii=False))


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None; None if there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


class PhaseRun(Protocol):
    """What one phase of a repeated benchmark returns (a dataclass in each benchmark)."""

    phase: str
    repeat: int
    problems: list[str]
    warnings: list[str]


R = TypeVar("R", bound=PhaseRun)


def run_repetitions(base_dir: Path, keep: bool, repeat: int, phases: list[tuple[str, float]],
                    quiet_wait: float,
                    run: Callable[[str, int, float, contextlib.ExitStack], R],
                    describe: Callable[[R], Iterable[str]],
                    report: Callable[[list[R]], None], once: Iterable[str] = ()) -> int:
    """Run every phase `repeat` times on a quiet machine (the phases named in `once` only
    in the first repetition: they repeat on their own); then report what was measured,
    even after Ctrl-C or a failure, and keep the run directories when anything failed.
    Returns the exit code (0, 1 on a failed run, 130 when interrupted)."""
    once = set(once)
    results: list[R] = []
    failed = False
    with contextlib.ExitStack() as cleanup:
        try:
            with sigterm_as_interrupt():
                for n in range(1, repeat + 1):
                    for phase, rate in phases:
                        if n > 1 and phase in once:
                            continue
                        wait_for_quiet(quiet_wait)
                        log(f"run {n} [{phase}]")
                        result = run(phase, n, rate, cleanup)
                        results.append(result)
                        for line in describe(result):
                            log(f"  {line}")
                        log_findings(result.problems, result.warnings)
        except KeyboardInterrupt:
            log("interrupted: stopping everything")
            failed = True
            return 130
        except Exception:
            failed = True
            raise
        finally:
            cleanup.close()  # background publishers and daemons still running, if any
            failed = failed or any(r.problems for r in results)
            keep_or_remove(base_dir, keep or failed)
            if results:
                report(results)
                for r in results:
                    print_findings(f"run {r.repeat} [{r.phase}]", r.problems, r.warnings)
    return 1 if failed else 0
