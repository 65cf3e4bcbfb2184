"""Real and stub servers for tests: a private Mosquitto, a private VictoriaMetrics, a stub InfluxDB.

Everything here listens on 127.0.0.1 only, on a free port, with its own temporary data
directory. Nothing is ever skipped: a missing binary raises ``RuntimeError`` telling how to
install it. Every process started here is stopped by ``stop()``/``close()``/the context
manager, and, as a last resort, by an ``atexit`` hook, so a failing test never leaks one.

Only the standard library is used, so this module can be imported from sync tests, asyncio
tests, benchmarks and scripts alike.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

__all__ = [
    "BRIDGE_OUT",
    "LOOPBACK",
    "Mosquitto",
    "RecordedRequest",
    "StubInfluxServer",
    "StubResponse",
    "VictoriaMetrics",
    "bridge_lines",
    "free_port",
]

LOOPBACK = "127.0.0.1"

_INSTALL_HINT = (
    "run the test command from the README (it installs the test servers), "
    "or install it with `apt-get install mosquitto victoria-metrics`"
)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _find_binary(name: str, *fallbacks: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in fallbacks:
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        f"the `{name}` binary was not found on PATH nor in {list(fallbacks)}; the tests need a "
        f"real {name} and never skip: {_INSTALL_HINT}"
    )


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<no log at {path}>"
    return "\n".join(text.splitlines()[-lines:]) or f"<empty log {path}>"


# Last-resort cleanup: every live server process is killed when the interpreter exits.
_LIVE: weakref.WeakSet[_ProcessServer] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.kill()


class _PortBusy(RuntimeError):
    """The chosen port is taken by some other process (free_port() race)."""


class _ProcessServer:
    """A server run as a child process (not daemonised) with its own data dir and port."""

    name: ClassVar[str] = "server"
    start_timeout: ClassVar[float] = 10.0
    stop_timeout: ClassVar[float] = 30.0

    def __init__(self, base_dir: Path | str | None = None, port: int | None = None) -> None:
        self._owns_dir = base_dir is None
        self.base_dir = Path(
            tempfile.mkdtemp(prefix=f"sentinel-{self.name}-") if base_dir is None else base_dir
        )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.stdout_log = self.base_dir / f"{self.name}.stdout.log"

    # -- to implement -------------------------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write config files etc. before each (re)start."""

    def _ready(self) -> bool:
        raise NotImplementedError

    def _log_tail(self) -> str:
        return _tail(self.stdout_log)

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> Self:
        """Start the process and wait until it serves; RuntimeError with the log tail if not.

        On the very first start (port chosen by us, not by the caller) a lost race for the
        port is retried on a new port; restarts always keep the same port.
        """
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        attempts = 1 if self._fixed_port else 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
            except _PortBusy:
                if attempt == attempts:
                    raise
                self.port = free_port()  # someone grabbed the port since free_port()
                continue
            self._fixed_port = True  # from now on (restarts) the port never changes
            return self
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        # Probing a port someone else listens on would report "ready" for the wrong server.
        if _port_accepts(self.host, self.port):
            raise _PortBusy(
                f"cannot start {self.name}: {self.host}:{self.port} is already in use "
                "by another process"
            )
        self._prepare()
        with self.stdout_log.open("ab") as out:
            self.process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
            )
        _LIVE.add(self)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                _LIVE.discard(self)
                log = self._log_tail()
                error = _PortBusy if "already in use" in log.lower() else RuntimeError
                raise error(
                    f"{self.name} exited with code {code} while starting on "
                    f"{self.host}:{self.port}; log tail:\n{log}"
                )
            if self._ready():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(
            f"{self.name} did not become ready on {self.host}:{self.port} within "
            f"{self.start_timeout:.0f}s; log tail:\n{self._log_tail()}"
        )

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: SIGTERM, wait (SIGKILL if it does not exit in time). Idempotent."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.process = None
        _LIVE.discard(self)

    def kill(self) -> None:
        """Crash stop: SIGKILL, then reap. Idempotent."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self.process = None
        _LIVE.discard(self)

    def restart(self, *, hard: bool = False) -> Self:
        """Stop (SIGKILL when ``hard``) and start again on the same port with the same data."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the process and delete the data dir if this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} pid={self.pid} {self.base_dir}>"


# ---------------------------------------------------------------------------------------
# Mosquitto
# ---------------------------------------------------------------------------------------


class Mosquitto(_ProcessServer):
    """A private mosquitto broker on a free loopback port with on-disk persistence.

    ``stop()`` (SIGTERM) makes mosquitto write its persistence file, so queued QoS>0
    messages of persistent sessions survive ``restart()``. ``kill()`` (SIGKILL) loses
    everything since the last autosave: pass e.g. ``extra_config=["autosave_interval 1"]``
    for crash tests that need the broker's own state to survive.
    """

    name = "mosquitto"

    # Directives of a base config (see ``base_config``) that point at the machine the config
    # was written for; they are replaced by the fixture's own (or dropped).
    _MACHINE_DIRECTIVES: ClassVar[frozenset[str]] = frozenset(
        {"listener", "user", "pid_file", "log_dest", "persistence_location"})

    def __init__(
        self,
        base_dir: Path | str | None = None,
        *,
        extra_config: Iterable[str] = (),
        port: int | None = None,
        base_config: str | None = None,
        paths: Mapping[str, Path | str] | None = None,
    ) -> None:
        """``base_config``: start from this mosquitto.conf text (e.g. a shipped one) instead
        of the fixture's default open broker. Only what ties it to a machine is rewritten:
        its single ``listener`` gets the fixture's loopback address and free port, ``user``,
        ``pid_file``, ``log_dest`` and ``persistence_location`` become the fixture's, and
        ``paths`` replaces the value of each named directive (``certfile``, ``acl_file``...),
        each of which must occur in the text. Every other line is kept as it is."""
        self.binary = _find_binary("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
        super().__init__(base_dir, port)
        self.data_dir = self.base_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.base_dir / "mosquitto.conf"
        self.log_path = self.base_dir / "mosquitto.log"
        self.extra_config = list(extra_config)
        self.base_config = base_config
        self.paths = {k: str(v) for k, v in (paths or {}).items()}
        if base_config is None and self.paths:
            raise ValueError("paths rewrites a base_config; none was given")
        if base_config is not None:
            self._derived_config()  # refuse a base config it cannot rewrite before starting

    def _own_lines(self) -> list[str]:
        # The log where log_text() reads it, and the user we are (see config_text()).
        return [f"log_dest file {self.log_path}",
                f"user {pwd.getpwuid(os.geteuid()).pw_name}"]

    def _derived_config(self) -> str:
        assert self.base_config is not None
        lines: list[str] = []
        listeners = 0
        replaced: set[str] = set()
        for raw in self.base_config.splitlines():
            words = raw.split(None, 1)
            key = words[0] if words and not words[0].startswith("#") else ""
            if key == "listener":
                listeners += 1
                lines.append(f"listener {self.port} {self.host}")
            elif key == "persistence_location":
                lines.append(f"persistence_location {self.data_dir}/")
            elif key in self._MACHINE_DIRECTIVES:
                continue
            elif key in self.paths:
                replaced.add(key)
                lines.append(f"{key} {self.paths[key]}")
            else:
                lines.append(raw)
        if listeners != 1:
            raise ValueError(f"base_config has {listeners} listeners; the fixture serves "
                             "exactly one port, so it supports exactly one")
        missing = sorted(set(self.paths) - replaced)
        if missing:
            raise ValueError(f"base_config has no {', '.join(missing)} line to rewrite")
        return "\n".join([*lines, *self._own_lines(), *self.extra_config]) + "\n"

    def config_text(self) -> str:
        """The mosquitto.conf written before every start."""
        if self.base_config is not None:
            return self._derived_config()
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "autosave_on_changes true",
            "set_tcp_nodelay true",
            "max_queued_messages 1000000",
            "max_inflight_messages 20",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            # When run as root mosquitto would switch to the `mosquitto` user, which cannot
            # write into our private temp dir; stay the user we are (ignored if not root).
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            *self.extra_config,
        ]
        return "\n".join(lines) + "\n"

    def _prepare(self) -> None:
        self.config_path.write_text(self.config_text())

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.config_path)]

    def _ready(self) -> bool:
        return _port_accepts(self.host, self.port)

    def _log_tail(self) -> str:
        return (
            f"--- {self.log_path.name} ---\n{_tail(self.log_path)}\n"
            f"--- {self.stdout_log.name} ---\n{_tail(self.stdout_log)}"
        )

    def log_text(self) -> str:
        """The whole broker log (``log_dest file``), for assertions and debugging."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# What a community box's broker sends up to the district (sentinel.district.wire); the
# command topic comes down. Kept here, not read from config/mosquitto/bridge.conf, so the
# rig runs with plain-TCP loopback brokers (the shipped file speaks TLS to a real host).
BRIDGE_OUT: tuple[str, ...] = ("events", "incidents/#", "heartbeat", "replies", "aggregates")


def bridge_lines(community: str, port: int, *, prefix: str = "sentinel",
                 host: str = LOOPBACK, keepalive: int = 5,
                 restart: tuple[int, int] = (1, 2)) -> list[str]:
    """``extra_config`` lines that bridge a box's broker to a district broker at
    ``host:port`` (in tests: a FaultProxy in front of it) for one community.

    As config/mosquitto/bridge.conf does, with test-sized timers: a persistent session
    on both sides (``cleansession false``; mosquitto then keeps queueing QoS 1 messages
    for the bridge while the link is down and sends them in order once it is back),
    QoS 1 both ways, the connection state on ``<prefix>/<community>/bridge`` ("1" when
    up; the district broker publishes the bridge's will "0" when the link dies), a short
    keepalive so a stalled link is noticed within ~1.5 × keepalive, and reconnect
    attempts every ``restart`` (base, cap) seconds.
    """
    base = f"{prefix.rstrip('/')}/{community}"
    return [
        f"connection district-{community}",
        f"address {host}:{port}",
        f"remote_clientid bridge-{community}",
        "cleansession false",
        "local_cleansession false",
        "try_private true",
        "notifications true",
        "notifications_local_only false",
        f"notification_topic {base}/bridge",
        f"keepalive_interval {keepalive}",
        f"restart_timeout {restart[0]} {restart[1]}",
        "start_type automatic",
        *(f"topic {leaf} out 1 {base}/ {base}/" for leaf in BRIDGE_OUT),
        f"topic commands in 1 {base}/ {base}/",
    ]


# ---------------------------------------------------------------------------------------
# VictoriaMetrics
# ---------------------------------------------------------------------------------------


def _promql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class VictoriaMetrics(_ProcessServer):
    """A private single-node VictoriaMetrics (v1.79) used as the InfluxDB-compatible store.

    Quirks (v1.79.5):
    * ``POST /api/v2/write`` and ``/write`` take line protocol, plain or gzip; they answer 204
      even for unparsable lines (skipped, only logged) and silently drop samples more than
      ~2 days in the future. So per-line rejection can only be tested against the stub.
    * Freshly written samples become visible to ``/api/v1/export`` only after up to ~1 s,
      even after ``/internal/force_flush``: poll with :meth:`wait_for_points`.
    * SIGKILL loses samples of the last ~10 s (series index not yet on disk) even after
      force_flush; ``stop()`` (SIGTERM) persists everything.
    * Exact duplicates are stored twice (dedup disabled), hence :meth:`distinct_points`.
    """

    name = "victoria-metrics"

    def __init__(
        self,
        base_dir: Path | str | None = None,
        *,
        extra_args: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        self.binary = _find_binary("victoria-metrics", "/usr/bin/victoria-metrics")
        super().__init__(base_dir, port)
        self.data_dir = self.base_dir / "data"
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def write_url(self) -> str:
        """InfluxDB 2.x write endpoint (append ``?org=..&bucket=..&precision=ms``)."""
        return f"{self.url}/api/v2/write"

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"-storageDataPath={self.data_dir}",
            f"-httpListenAddr={self.host}:{self.port}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-dedup.minScrapeInterval=0",
            "-selfScrapeInterval=0",
            "-loggerLevel=WARN",
            *self.extra_args,
        ]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=0.5) as resp:
                ok: bool = resp.status == 200 and resp.read().strip() == b"OK"
                return ok
        except (OSError, urllib.error.URLError):
            return False

    # -- HTTP helpers -------------------------------------------------------------------
    def _get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> bytes:
        query = urllib.parse.urlencode(list(params))
        url = f"{self.url}{path}" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=30) as resp:
            body: bytes = resp.read()
            return body

    def write(self, lines: str | bytes, *, precision: str = "ms", gzip_body: bool = False) -> int:
        """POST line protocol to /api/v2/write; returns the HTTP status (204 on success)."""
        body = lines.encode() if isinstance(lines, str) else lines
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if gzip_body:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        query = urllib.parse.urlencode({"org": "o", "bucket": "b", "precision": precision})
        req = urllib.request.Request(
            f"{self.write_url}?{query}", data=body, headers=headers, method="POST"
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            status: int = resp.status
            return status

    def force_flush(self) -> None:
        """Ask VM to flush its in-memory buffers (data still needs up to ~1 s to show up)."""
        self._get("/internal/force_flush")

    def export(self, match: str) -> list[dict[str, Any]]:
        """``/api/v1/export?match[]=<match>`` as a list of ``{metric, values, timestamps}``."""
        raw = self._get("/api/v1/export", [("match[]", match)])
        return [json.loads(line) for line in raw.splitlines() if line.strip()]

    def export_measurement(self, measurement: str) -> list[dict[str, Any]]:
        """All series of metrics named ``<measurement>_<field>``."""
        regex = re.escape(measurement) + "_.*"
        return self.export("{__name__=~" + _promql_string(regex) + "}")

    def distinct_points(
        self, measurement: str, *, key_label: str = "device_id"
    ) -> set[tuple[str, int]]:
        """Distinct ``(device_id, timestamp_ms)`` over all ``<measurement>_*`` metrics."""
        points: set[tuple[str, int]] = set()
        for series in self.export_measurement(measurement):
            key = str(series["metric"].get(key_label, ""))
            points.update((key, int(ts)) for ts in series["timestamps"])
        return points

    def wait_for_points(
        self,
        measurement: str,
        count: int,
        *,
        timeout: float = 10.0,
        key_label: str = "device_id",
    ) -> set[tuple[str, int]]:
        """Poll (with force_flush) until at least ``count`` distinct points are visible.

        Returns the last observed set either way, so the caller asserts on exact contents.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.force_flush()
            points = self.distinct_points(measurement, key_label=key_label)
            if len(points) >= count or time.monotonic() >= deadline:
                return points
            time.sleep(0.1)


# ---------------------------------------------------------------------------------------
# Stub InfluxDB (v2 write API)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StubResponse:
    """One scripted answer. ``delay`` (seconds) is slept before answering (timeout tests)."""

    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: str | bytes = b""
    delay: float = 0.0


ScriptItem = StubResponse | tuple[int, dict[str, str], str | bytes]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as seen by the stub (body already gzip-decoded)."""

    time: float  # time.time() when the request was fully read
    method: str
    path: str  # without the query string
    query_string: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    raw_body: bytes  # as received on the wire
    body: bytes  # decoded (Content-Encoding: gzip/deflate undone)
    status: int  # what the stub answered

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    @property
    def lines(self) -> list[str]:
        """Non-empty line protocol lines of the body."""
        return [line for line in self.text.split("\n") if line.strip()]

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


def _decode_body(raw: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the influxdb client uses
    server: _StubHTTPServer
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self) -> None:
        raw = self._read_body()
        parsed = urllib.parse.urlsplit(self.path)
        try:
            body = _decode_body(raw, self.headers.get("Content-Encoding", ""))
        except (OSError, ValueError, zlib.error, EOFError) as exc:
            body = b""
            response = StubResponse(
                400,
                {"Content-Type": "application/json"},
                json.dumps({"code": "invalid", "message": f"cannot decode body: {exc}"}),
            )
        else:
            response = self.server.stub._respond(parsed.path, body)
        if response.delay:
            time.sleep(response.delay)
        self.server.stub._record(
            RecordedRequest(
                time=time.time(),
                method=self.command,
                path=parsed.path,
                query_string=parsed.query,
                query=urllib.parse.parse_qs(parsed.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                raw_body=raw,
                body=body,
                status=response.status,
            )
        )
        payload = response.body.encode() if isinstance(response.body, str) else response.body
        self._send(response.status, dict(response.headers), payload)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/health":
            body = json.dumps({"name": "influxdb", "status": "pass"}).encode()
            self._send(200, {"Content-Type": "application/json"}, body)
        elif path == "/ping":
            self._send(204, {"X-Influxdb-Version": "v2.7.0-stub"}, b"")
        else:
            self._send(404, {"Content-Type": "application/json"}, b'{"code":"not found"}')


class _StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not block stop()
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], stub: StubInfluxServer) -> None:
        self.stub = stub
        super().__init__(address, _StubHandler)


class StubInfluxServer:
    """A scripted fake of the InfluxDB 2.x write API, served from a background thread.

    Answers ``POST /api/v2/write`` with the next item of ``script`` (``(status, headers,
    body)`` tuples or :class:`StubResponse`), then with ``default`` (204). If ``reject_marker``
    is set, any write whose (decoded) body contains it gets a 400 with an InfluxDB-style
    JSON error instead (before the script is consulted), so a client can find the bad line
    by bisection. Every request is recorded in :attr:`requests`; the bodies of 2xx writes
    are in :attr:`accepted_lines`.

    Works from sync and asyncio tests alike (the server runs in its own thread; from a
    coroutine use ``await asyncio.to_thread(stub.wait_for_requests, n)`` to wait).
    """

    WRITE_PATH: ClassVar[str] = "/api/v2/write"

    def __init__(
        self,
        script: Iterable[ScriptItem] = (),
        *,
        default: ScriptItem = StubResponse(204),
        reject_marker: str | None = None,
        reject_message: str = "unable to parse line",
    ) -> None:
        self.host = LOOPBACK
        self.port = 0
        self._lock = threading.Condition()
        self._script: list[StubResponse] = [self._normalize(item) for item in script]
        self.default = self._normalize(default)
        self.reject_marker = reject_marker
        self.reject_message = reject_message
        self.requests: list[RecordedRequest] = []
        self._server: _StubHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _normalize(item: ScriptItem) -> StubResponse:
        if isinstance(item, StubResponse):
            return item
        status, headers, body = item
        return StubResponse(status, dict(headers), body)

    # -- configuration while running ------------------------------------------------------
    def script(self, *items: ScriptItem) -> None:
        """Append responses to the script (consumed in order, one per write)."""
        with self._lock:
            self._script.extend(self._normalize(item) for item in items)

    @property
    def pending_script(self) -> int:
        with self._lock:
            return len(self._script)

    # -- used by the handler threads ------------------------------------------------------
    def _respond(self, path: str, body: bytes) -> StubResponse:
        if path != self.WRITE_PATH:
            return StubResponse(404, {"Content-Type": "application/json"}, b'{"code":"not found"}')
        with self._lock:
            marker = self.reject_marker
            if marker is not None and marker.encode() in body:
                bad = next(
                    (ln for ln in body.decode(errors="replace").split("\n") if marker in ln),
                    "",
                )
                message = f"{self.reject_message}: {bad!r}"
                return StubResponse(
                    400,
                    {"Content-Type": "application/json; charset=utf-8"},
                    json.dumps({"code": "invalid", "message": message}),
                )
            return self._script.pop(0) if self._script else self.default

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()

    # -- assertions helpers -----------------------------------------------------------------
    @property
    def writes(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == self.WRITE_PATH]

    @property
    def accepted_lines(self) -> list[str]:
        """Line protocol lines of all writes answered with 2xx, in arrival order."""
        return [line for r in self.writes if 200 <= r.status < 300 for line in r.lines]

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests were recorded; TimeoutError otherwise."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(
                    f"stub got {len(self.requests)} requests, expected {count} in {timeout}s"
                )
            return list(self.requests)

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def write_url(self) -> str:
        return f"{self.url}{self.WRITE_PATH}"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("stub influx server already started")
        self._server = _StubHTTPServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"stub-influx-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __iter__(self) -> Iterator[RecordedRequest]:
        return iter(list(self.requests))

    def __repr__(self) -> str:
        return f"<StubInfluxServer {self.url} requests={len(self.requests)}>"
