#!/usr/bin/env python3
"""Start-up benchmark: from process spawn to the daemon's `daemon_ready`, and its memory.

For the example inventory (devices/shuibei.csv, 1,005 devices) and for an inventory of N
devices (default 100,000, made by `scripts/gen_inventory.py --devices N`), the daemon
(`python -m sentinel run -c <copy of config/>`) is started K times against a private
Mosquitto on a free loopback port, each time with a fresh state dir, and measured:

* ready s: wall time from spawn to the `daemon_ready` JSON log line (read from its pipe);
* CPU s: the daemon's CPU time (all threads) at that moment: less sensitive to a busy box;
* HWM ready / HWM idle MiB: peak RSS (VmHWM, /proc/<pid>/status) at ready and after
  `--idle` seconds of idling; RSS idle MiB: VmRSS then.

Medians over the K runs are printed as a table (and written with `--json OUT`, with every
run and the times of the log events before ready). The on-call file's channels are pointed
at a loopback receiver; the sentinel package is byte-compiled first, as an installed one is
(a source tree under PYTHONDONTWRITEBYTECODE would compile it at every start). `--warm`
measures restarts on a state dir a first (unmeasured) start created.

`--profile` instead starts the daemon once per inventory under `python -X importtime` (top
imports) and once under pyinstrument (in a fresh interpreter, stopped at ready; needs
`pip install pyinstrument`), and prints the top costs with the time of each phase.

    python bench/startup.py [--devices N] [--repeat K] [--idle S] [--json OUT]
    python bench/startup.py --profile [--devices N]

Other scripts call `measure_startup(devices, repeat)`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import common  # first: it puts src/ and tests/ on sys.path

from servers import Mosquitto, free_port

ROOT = common.ROOT
CONFIG_DIR = ROOT / "config"
EXAMPLE_INVENTORY = ROOT / "devices" / "shuibei.csv"
PROFILE_DIRS = [ROOT / "devices" / "profiles"]
GEN_INVENTORY = ROOT / "scripts" / "gen_inventory.py"
READY_TIMEOUT = 120.0


def example_devices() -> int:
    """Devices in the example inventory (rows of devices/shuibei.csv)."""
    with EXAMPLE_INVENTORY.open(encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip()) - 1


# ---------------------------------------------------------------------------------------
# A deployment: inventory, config folder, environment
# ---------------------------------------------------------------------------------------


def make_inventory(devices: int, dest: Path) -> Path:
    """The example inventory when `devices` is its size; else one generated with exactly
    `devices` devices (the example community copied and cut, same seed)."""
    if devices == example_devices():
        return EXAMPLE_INVENTORY
    out = dest / f"inventory-{devices}.csv"
    if not out.exists():
        subprocess.run([sys.executable, str(GEN_INVENTORY), "--devices", str(devices),
                        "--out", str(out)], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


_CHANNELS = re.compile(r"^channels = \[.*\]$", re.M)


def make_config(dest: Path, notify_url: str) -> Path:
    """Copy config/*.toml into dest; the on-call file's channels all go to `notify_url`
    (a loopback receiver: never the invented vendor channels). Returns sentinel.toml."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in CONFIG_DIR.glob("*.toml"):
        shutil.copy(path, dest / path.name)
    oncall = dest / "oncall.toml"
    text, count = _CHANNELS.subn(f"channels = [{json.dumps(notify_url)}]",
                                 oncall.read_text(encoding="utf-8"))
    contacts = len(tomllib.loads(text).get("contact", []))
    if count != contacts:
        raise RuntimeError(f"{oncall}: rewrote {count} channel lists for {contacts} contacts")
    oncall.write_text(text, encoding="utf-8")
    return dest / "sentinel.toml"


def daemon_env(config_dir: Path, inventory: Path, broker_port: int, state_dir: Path
               ) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env.update({
        "SENTINEL_CONFIG": str(config_dir / "sentinel.toml"),
        "SENTINEL_MQTT__PORT": str(broker_port),
        "SENTINEL_MQTT__RECONNECT__MAX_DELAY": "1",
        "SENTINEL_STATE_DIR": str(state_dir),
        "SENTINEL_LOG__FORMAT": "json",
        "SENTINEL_CONTROL__PORT": str(free_port()),
        "SENTINEL_DEVICES__INVENTORY": json.dumps([str(inventory)]),
        "SENTINEL_DEVICES__PROFILE_DIRS": json.dumps([str(p) for p in PROFILE_DIRS]),
    })
    return env


@dataclass
class Deployment:
    config: Path
    inventory: Path
    devices: int
    broker: Mosquitto
    work: Path

    def env(self, state_dir: Path) -> dict[str, str]:
        return daemon_env(self.config.parent, self.inventory, self.broker.port, state_dir)


def compile_package(env: dict[str, str]) -> None:
    """Byte-compile the sentinel package the daemon imports, as an installed one is: from
    a source tree under PYTHONDONTWRITEBYTECODE, every start would compile it again."""
    subprocess.run([sys.executable, "-c", "import compileall, os, sentinel; "
                    "compileall.compile_dir(os.path.dirname(sentinel.__file__), quiet=1)"],
                   env=env, cwd=ROOT, check=True)


@contextlib.contextmanager
def deployment(devices: int, work: Path) -> Iterator[Deployment]:
    """A config folder, an inventory of `devices` devices and a running private broker."""
    inventory = make_inventory(devices, work)
    with common.Webhook() as webhook:
        config = make_config(work / f"config-{devices}", webhook.url())
        with Mosquitto(work / f"mosquitto-{devices}") as broker:
            dep = Deployment(config, inventory, devices, broker, work)
            compile_package(dep.env(work / "state-compile"))
            yield dep


# ---------------------------------------------------------------------------------------
# One measured start
# ---------------------------------------------------------------------------------------


def _status_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(rest.split()[0])
    return out


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


@dataclass
class StartRun:
    devices: int
    run: int
    ready_s: float | None = None
    cpu_s: float | None = None
    hwm_ready_mib: float | None = None
    hwm_idle_mib: float | None = None
    rss_idle_mib: float | None = None
    exit_code: int | None = None
    busy_before_pct: float | None = None
    # log events before ready: (seconds after spawn, event name)
    events: list[tuple[float, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class _LineReader(threading.Thread):
    """Reads the daemon's log pipe; stamps `daemon_ready` the moment its line arrives and
    samples the daemon's memory and CPU right then."""

    def __init__(self, proc: subprocess.Popen[bytes], t0: float, log_path: Path) -> None:
        super().__init__(name="daemon-log", daemon=True)
        self.proc, self.t0, self.log_path = proc, t0, log_path
        self.ready = threading.Event()
        self.ready_at: float | None = None
        self.at_ready: dict[str, Any] = {}
        self.events: list[tuple[float, str]] = []
        self.levels: dict[str, int] = {}

    def run(self) -> None:
        assert self.proc.stdout is not None
        with self.log_path.open("wb") as log:
            for raw in self.proc.stdout:
                now = time.monotonic()
                log.write(raw)
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                name = str(event.get("event"))
                level = str(event.get("level"))
                if level in common.NOTABLE_LEVELS:
                    key = f"{level}:{name}"
                    self.levels[key] = self.levels.get(key, 0) + 1
                if self.ready_at is None:
                    self.events.append((round(now - self.t0, 3), name))
                    if name == "daemon_ready":
                        self.ready_at = now
                        with contextlib.suppress(OSError):
                            self.at_ready = {"status": _status_kib(self.proc.pid),
                                             "cpu": common.proc_cpu(self.proc.pid)}
                        self.ready.set()
        self.ready.set()  # the pipe closed: the daemon is gone


def start_once(dep: Deployment, run: int, state_dir: Path, idle: float,
               quiet_wait: float = 0.0) -> StartRun:
    """Start the daemon, wait for `daemon_ready`, idle, stop it (SIGTERM); measure."""
    result = StartRun(dep.devices, run)
    if quiet_wait > 0:
        result.busy_before_pct = round(common.wait_for_quiet(quiet_wait), 1)
    state_dir.mkdir(parents=True, exist_ok=True)
    env = dep.env(state_dir)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "sentinel", "run", "-c", str(dep.config)],
                            env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    reader = _LineReader(proc, t0, state_dir / "daemon.log")
    reader.start()
    try:
        if not reader.ready.wait(READY_TIMEOUT) or reader.ready_at is None:
            result.problems.append(
                f"no daemon_ready within {READY_TIMEOUT:g} s (exit {proc.poll()}); log: "
                f"{reader.log_path}")
            return result
        result.ready_s = round(reader.ready_at - t0, 3)
        result.events = reader.events
        status = reader.at_ready.get("status", {})
        if "VmHWM" in status:
            result.hwm_ready_mib = _mib(status["VmHWM"])
        if "cpu" in reader.at_ready:
            result.cpu_s = round(reader.at_ready["cpu"], 2)
        time.sleep(idle)
        if proc.poll() is not None:
            result.problems.append(f"daemon exited ({proc.returncode}) while idle")
            return result
        status = _status_kib(proc.pid)
        result.hwm_idle_mib = _mib(status["VmHWM"])
        result.rss_idle_mib = _mib(status["VmRSS"])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            result.exit_code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            result.exit_code = proc.wait(10)
            result.problems.append("daemon did not stop within 30 s of SIGTERM (killed)")
        reader.join(5)
    if result.exit_code not in (0, None):
        result.problems.append(f"daemon exit code {result.exit_code}")
    for key, count in reader.levels.items():
        if key.startswith(common.FAILING_LEVELS):
            result.problems.append(f"daemon log: {count}x {key}")
    return result


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def measure_startup(devices: int, repeat: int, *, idle: float = 5.0, warm: bool = False,
                    quiet_wait: float = 5.0, work_dir: Path | None = None,
                    keep: bool = False) -> dict[str, Any]:
    """Start the daemon `repeat` times with an inventory of `devices` devices (the example
    inventory when `devices` is its size) and return the medians and every run:

    ``{"devices", "repeat", "warm", "ready_s", "cpu_s", "hwm_ready_mib", "peak_rss_mib",
    "rss_idle_mib", "runs": [...], "problems": [...]}`` where ``peak_rss_mib`` is the
    median VmHWM after `idle` seconds. Fresh state dir per run, unless `warm`: then one
    unmeasured start first creates the state every measured run restarts on."""
    own = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="sentinel-startup-")) if work_dir is None else work_dir
    runs: list[StartRun] = []
    try:
        with deployment(devices, work) as dep:
            warm_state = work / f"state-{devices}-warm"
            if warm:
                prime = start_once(dep, 0, warm_state, 0.5, quiet_wait)
                if prime.problems:
                    raise RuntimeError(f"priming start failed: {prime.problems}")
            for n in range(1, repeat + 1):
                state = warm_state if warm else work / f"state-{devices}-{n}"
                run = start_once(dep, n, state, idle, quiet_wait)
                runs.append(run)
                common.log(f"  {devices} devices, run {n}: ready {run.ready_s} s, "
                           f"CPU {run.cpu_s} s, HWM {run.hwm_ready_mib} → "
                           f"{run.hwm_idle_mib} MiB" + (f"  {run.problems}" if run.problems
                                                        else ""))
                if not warm and not keep:
                    shutil.rmtree(state, ignore_errors=True)
    finally:
        problems = [p for r in runs for p in r.problems]
        if own and not keep and not problems:
            shutil.rmtree(work, ignore_errors=True)
        elif own:
            common.log(f"run directory kept: {work}")
    return {
        "devices": devices,
        "repeat": repeat,
        "warm": warm,
        "idle_s": idle,
        "ready_s": _median([r.ready_s for r in runs]),
        "cpu_s": _median([r.cpu_s for r in runs]),
        "hwm_ready_mib": _median([r.hwm_ready_mib for r in runs]),
        "peak_rss_mib": _median([r.hwm_idle_mib for r in runs]),
        "rss_idle_mib": _median([r.rss_idle_mib for r in runs]),
        "runs": [asdict(r) for r in runs],
        "problems": problems,
    }


def print_table(results: list[dict[str, Any]]) -> None:
    def f(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    print(f"{'devices':>8} {'runs':>4} {'ready s':>8} {'CPU s':>6} {'HWM ready':>10} "
          f"{'HWM idle':>9} {'RSS idle':>9}   (medians; MiB)")
    for r in results:
        print(f"{r['devices']:>8} {len(r['runs']):>4} {f(r['ready_s'], '.2f'):>8} "
              f"{f(r['cpu_s'], '.2f'):>6} {f(r['hwm_ready_mib'], '.1f'):>10} "
              f"{f(r['peak_rss_mib'], '.1f'):>9} {f(r['rss_idle_mib'], '.1f'):>9}")
    for r in results:
        for p in r["problems"]:
            print(f"  {r['devices']} devices FAILED: {p}")


# ---------------------------------------------------------------------------------------
# Profiling: -X importtime and pyinstrument (in-process, stopped at ready)
# ---------------------------------------------------------------------------------------

_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def top_imports(stderr_text: str, count: int = 15) -> list[tuple[int, int, str]]:
    """(cumulative µs, self µs, module) of the slowest top-level imports (-X importtime)."""
    rows = []
    for line in stderr_text.splitlines():
        m = _IMPORT_LINE.match(line)
        if m and len(m.group(3)) <= 1:  # the outermost imports only
            rows.append((int(m.group(2)), int(m.group(1)), m.group(4)))
    return sorted(rows, reverse=True)[:count]


def profile_importtime(dep: Deployment, state_dir: Path) -> None:
    env = dep.env(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    err_path = state_dir / "importtime.txt"
    with err_path.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "sentinel", "run",
                                 "-c", str(dep.config)], env={**env, "PYTHONUNBUFFERED": "1"},
                                cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while '"daemon_ready"' not in err_path.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no daemon_ready under -X importtime: {err_path}")
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    text = err_path.read_text(errors="replace")
    total = sum(int(m.group(1)) for m in map(_IMPORT_LINE.match, text.splitlines()) if m)
    print(f"\n-X importtime, {dep.devices} devices: all imports {total / 1e6:.2f} s "
          "(self times added up); slowest top-level imports (cumulative):")
    for cum, own, module in top_imports(text):
        print(f"  {cum / 1e6:7.3f} s  (self {own / 1e6:.3f})  {module}")


# The profiled start, in a fresh interpreter that has imported nothing else (this module
# imports paho and more, which would then look free): what `sentinel run` does, under
# pyinstrument, stopped at `daemon_ready`. argv: profile output file, sampling interval.
# Prints the phase times as JSON.
_PROFILE_CHILD = """
import sys, time, json
from pyinstrument import Profiler
profiler = Profiler(interval=float(sys.argv[2]), async_mode="disabled")
t0 = time.perf_counter()
phases = {}
def lap(name):
    phases[name] = round(time.perf_counter() - t0 - sum(phases.values()), 3)
profiler.start()
import asyncio, os
from pathlib import Path
import sentinel.cli
from sentinel.loading import load_all
from sentinel.log import configure_logging
lap("import_cli")
loaded = load_all(Path(os.environ["SENTINEL_CONFIG"]))
lap("load_all")
configure_logging(loaded.settings.log.level, loaded.settings.log.format)
from sentinel.app import run_daemon
lap("import_app")
async def main():
    stop = asyncio.Event()
    def ready(daemon):
        profiler.stop()
        lap("run_daemon_to_ready")
        stop.set()
    await run_daemon(loaded, stop, on_ready=ready)
asyncio.run(main())
Path(sys.argv[1]).write_text(profiler.output_text(unicode=True, color=False,
                                                  show_all=False), encoding="utf-8")
print(json.dumps(phases))
"""


def profile_pyinstrument(dep: Deployment, state_dir: Path, lines: int,
                         interval: float = 0.001) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    out = state_dir / "pyinstrument.txt"
    done = subprocess.run([sys.executable, "-c", _PROFILE_CHILD, str(out), str(interval)],
                          env=dep.env(state_dir), cwd=ROOT, capture_output=True, text=True,
                          timeout=READY_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"profiled start failed:\n{done.stderr[-3000:]}")
    phases = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\npyinstrument, {dep.devices} devices: phases (s) {phases}")
    text = out.read_text(encoding="utf-8").splitlines()
    print("\n".join(text[:lines]))
    if len(text) > lines:
        print(f"  … {len(text) - lines} more lines in {out}")


def run_profiles(devices_list: list[int], which: str, lines: int, keep: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="sentinel-startup-profile-"))
    try:
        for devices in devices_list:
            with deployment(devices, work) as dep:
                if which in ("importtime", "both"):
                    profile_importtime(dep, work / f"state-{devices}-importtime")
                if which in ("pyinstrument", "both"):
                    profile_pyinstrument(dep, work / f"state-{devices}-pyinstrument", lines)
    finally:
        if keep:
            common.log(f"profile outputs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=100_000,
                        help="devices of the large inventory (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="starts per inventory (3)")
    parser.add_argument("--idle", type=float, default=5.0,
                        help="seconds idle after ready before the second memory sample (5)")
    parser.add_argument("--no-example", action="store_true",
                        help="skip the example inventory (devices/shuibei.csv)")
    parser.add_argument("--only-example", action="store_true",
                        help="only the example inventory")
    parser.add_argument("--warm", action="store_true",
                        help="measure restarts on an existing state dir (a first start "
                             "creates it) instead of fresh ones")
    parser.add_argument("--quiet-wait", type=float, default=5.0,
                        help="before each start wait up to this many seconds for other "
                             "processes to stop using the CPU (5)")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--profile", nargs="?", const="both",
                        choices=["both", "importtime", "pyinstrument"],
                        help="profile one start per inventory instead of measuring")
    parser.add_argument("--profile-lines", type=int, default=80,
                        help="lines of the pyinstrument tree to print (80)")
    args = parser.parse_args(argv)
    sizes = [] if args.no_example else [example_devices()]
    if not args.only_example and args.devices not in sizes:
        sizes.append(args.devices)
    if args.profile:
        run_profiles(sizes, args.profile, args.profile_lines, args.keep)
        return 0
    results = []
    with common.sigterm_as_interrupt():
        for devices in sizes:
            common.log(f"{devices} devices: {args.repeat} start(s)"
                       + (" (warm)" if args.warm else ""))
            results.append(measure_startup(devices, args.repeat, idle=args.idle,
                                           warm=args.warm, quiet_wait=args.quiet_wait,
                                           keep=args.keep))
    print_table(results)
    if args.json:
        common.write_json(args.json, {"python": sys.version.split()[0],
                                      "results": results})
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
