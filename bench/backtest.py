#!/usr/bin/env python3
"""Backtest benchmark (issue 17): a week of the Shuibei inventory replayed through the rules.

    ./.venv/bin/python bench/backtest.py                 # generate once, then 3 replays, --jobs 2
    ./.venv/bin/python bench/backtest.py --repeat 1 --jobs 1
    ./.venv/bin/python bench/backtest.py --days 1        # a smaller store (its own cache file)
    ./.venv/bin/python bench/backtest.py --profile       # one job on a slice under pyinstrument

1. **The store** (made once, cached under `bench/results/backtest-store-*/`): the embedded
   store's schema (`store/sqlite.py`, `READINGS_SCHEMA`) holding `--days` (7) of the shipped
   inventory (config/sentinel.toml, 1,005 devices) at one reading per device every
   `--interval` (60) s: 10,130,400 readings for a week. The values are the simulator's own
   device models (`sim/model.py`, seed `--seed`), sampled at each device's phase within the
   minute, with a few injected episodes (a smoke alarm, a gas leak, a hydrant drop, a tank
   draining, an SOS, a fall, devices going offline and coming back) so the replay has
   incidents to open. `received_ms` is `ts_ms` plus 20-400 ms. Rows are written with
   `executemany` in one transaction per simulated hour, journal off, then the file is
   switched to WAL as the daemon keeps it. A file left half-written is never used: it is
   renamed into place only when complete.
2. **The replay**: `python -m sentinel backtest -c config/sentinel.toml --from .. --to ..
   --json --jobs N` as a subprocess, `SENTINEL_STATE_DIR` pointing at the cached store (no
   incidents database there, so there is no comparison with recorded incidents), stdout to
   a file under bench/results/. Measured from outside: wall seconds (spawn to exit, start-up
   and loading included), readings/s (the summary line's `readings` ÷ wall), and memory of
   the whole process tree (the command and its `--jobs` children, sampled every 50 ms from
   /proc): the peak of the summed RSS, the peak of the summed PSS (shared pages of the
   forked children counted once, shared out), and the largest single VmHWM.
   A digest of the incident lines is printed, so a change meant only for speed can be
   checked to report the same incidents.

Before each replay the script waits (up to `--quiet-wait` s) for a quiet machine, and notes
the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common  # first: it puts src/ and tests/ on sys.path
from sentinel.loading import load_all
from sentinel.sim.model import FleetModel
from sentinel.store.sqlite import READINGS_SCHEMA

ROOT = common.ROOT
CONFIG = ROOT / "config" / "sentinel.toml"
RESULTS = ROOT / "bench" / "results"
# Bump when the generated data changes, so an old cache is not taken for the new one.
GENERATOR_VERSION = 1
# A Monday, local midnight (the configured zone, Asia/Shanghai).
DEFAULT_START = "2026-11-02T00:00:00+08:00"

# (event, device, hours after the start, hours it lasts): what the week holds besides the
# plain readings. Devices are picked by kind and index in the inventory's sorted ids.
EPISODES: tuple[tuple[str, str, int, float, float], ...] = (
    ("smoke-alarm", "smoke", 10, 26.0, 0.5),
    ("smoke-alarm", "smoke", 11, 26.02, 0.5),    # same building? counted as it falls
    ("gas-leak", "gas", 3, 50.0, 1.0),
    ("hydrant-drop", "hydrant_pressure", 5, 75.0, 2.0),
    ("tank-low", "water_level", 2, 100.0, 3.0),
    ("sos", "elderly_watch", 4, 120.0, 0.2),
    ("fall", "elderly_watch", 7, 130.0, 1.0),
    ("offline", "smoke", 100, 30.0, 6.0),
    ("offline", "gas", 20, 60.0, 12.0),
    ("offline", "hydrant_pressure", 30, 140.0, 4.0),
)


def store_dir(days: float, interval: float, seed: int, start: str) -> Path:
    stamp = datetime.fromisoformat(start).strftime("%Y%m%d")
    return RESULTS / (f"backtest-store-v{GENERATOR_VERSION}-{stamp}-{days:g}d-{interval:g}s-"
                      f"seed{seed}")


def generate(dest: Path, start: float, days: float, interval: float, seed: int) -> int:
    """Write the store (see the module doc); return the number of readings."""
    loaded = load_all(CONFIG)
    inventory = loaded.inventory
    fleet = FleetModel(inventory, loaded.kinds, loaded.profiles, seed=seed, start=start)
    models = sorted(fleet.models.values(), key=lambda m: m.device.id)
    by_kind: dict[str, list[Any]] = {}
    for m in models:
        by_kind.setdefault(m.device.kind, []).append(m)
    # Events of the sim last for ever once injected; an episode ends when its event is
    # taken off the model again (the device's next reading is a normal one).
    starts: list[tuple[float, Any, str]] = []
    ends: list[tuple[float, Any, str]] = []
    for event, kind, index, at_h, hours in EPISODES:
        model = by_kind[kind][index]
        starts.append((start + at_h * 3600, model, event))
        ends.append((start + (at_h + hours) * 3600, model, event))
    rng = random.Random(f"bench-backtest/{seed}")
    # Each device reports at its own second within the interval (its phase), as devices do.
    phases = [(rng.uniform(0, interval), m) for m in models]
    phases.sort(key=lambda p: p[0])
    tmp = dest.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: the 1,005 hot leaf pages and more
    conn.executescript(READINGS_SCHEMA)
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    steps = round(days * 86400 / interval)
    per_commit = max(1, round(3600 / interval))
    count = 0
    began = time.monotonic()
    insert = ("INSERT INTO readings (device_id, ts_ms, kind, received_ms, fields)"
              " VALUES (?, ?, ?, ?, ?)")
    for first in range(0, steps, per_commit):
        rows: list[tuple[str, int, str, int, str]] = []
        for step in range(first, min(steps, first + per_commit)):
            base = start + step * interval
            for at, model, event in starts:
                if at <= base + interval and event not in model.events:
                    model.inject(event, at)
            for at, model, event in ends:
                if at <= base and event in model.events:
                    del model.events[event]
            for phase, model in phases:
                sample = model.sample(base + phase)
                if sample is None:  # offline
                    continue
                ts_ms = sample.ts_ms
                rows.append((model.device.id, ts_ms, model.device.kind,
                             ts_ms + rng.randint(20, 400), dumps(sample.values)))
        conn.execute("BEGIN")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")
        count += len(rows)
        if first // per_commit % 24 == 0:
            done = min(steps, first + per_commit) / steps
            elapsed = time.monotonic() - began
            common.log(f"  generated {count:,} readings ({done:.0%}, {elapsed:.0f} s, "
                       f"ETA {elapsed / done - elapsed:.0f} s)")
    conn.execute("PRAGMA journal_mode=WAL")  # as the daemon keeps it
    conn.execute("ANALYZE")
    conn.close()
    tmp.rename(dest)
    return count


# ---------------------------------------------------------------------------------------
# Memory of a process tree, from /proc
# ---------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    return out


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _status_kib(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name = line.split(":", 1)[0]
            if name in keys:
                out[name] = int(line.split()[1])
    return out


def _pss_kib(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


class TreeMemory:
    """Peaks of a process tree's memory, sampled: summed RSS, summed PSS, largest VmHWM."""

    def __init__(self) -> None:
        self.rss = 0
        self.pss = 0
        self.hwm = 0
        self.procs = 0

    def sample(self, pid: int, pss: bool = True) -> None:
        """`pss`: also read smaps_rollup. Only now and then: the kernel walks every mapping
        of the process for it (the store's 1.5 GB file among them) under the process's
        memory lock, which stalls the replay's page faults — sampled every 50 ms it cost
        the replay a third more CPU (measured: 101 against 69 CPU s). RSS and VmHWM come
        from /proc/<pid>/status, which is cheap."""
        pids = tree(pid)
        self.procs = max(self.procs, len(pids))
        rss = total_pss = 0
        for p in pids:
            st = _status_kib(p, ("VmRSS", "VmHWM"))
            rss += st.get("VmRSS", 0)
            self.hwm = max(self.hwm, st.get("VmHWM", 0))
            if pss:
                total_pss += _pss_kib(p)
        self.rss = max(self.rss, rss)
        self.pss = max(self.pss, total_pss)


# ---------------------------------------------------------------------------------------
# One replay
# ---------------------------------------------------------------------------------------


def replay(state_dir: Path, start: str, end: str, jobs: int, out: Path,
           extra: list[str]) -> dict[str, Any]:
    env = {**os.environ, "SENTINEL_STATE_DIR": str(state_dir),
           "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "sentinel", "backtest", "-c", str(CONFIG), "--from", start,
           "--to", end, "--json", "--jobs", str(jobs), *extra]
    mem = TreeMemory()
    cpu0 = os.times()
    busy0 = common.system_busy()
    began = time.perf_counter()
    with out.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.PIPE, env=env)
        samples = 0
        while proc.poll() is None:
            # Summed RSS every 50 ms; PSS once a second (see TreeMemory.sample).
            mem.sample(proc.pid, pss=samples % 20 == 0)
            samples += 1
            time.sleep(0.05)
    wall = time.perf_counter() - began
    cpu1 = os.times()
    busy = common.system_busy() - busy0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"backtest failed ({proc.returncode}):\n{err}")
    lines = out.read_bytes().splitlines()
    summary = json.loads(lines[-1])
    digest = hashlib.sha256(b"\n".join(lines[:-1])).hexdigest()[:16]
    readings = int(summary["readings"])
    cpu = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user
                                                           + cpu0.children_system)
    own = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {
        "command": " ".join(cmd), "wall_s": round(wall, 2), "readings": readings,
        "readings_per_s": round(readings / wall), "replay_s": summary["seconds"],
        "cpu_s": round(cpu, 2),
        # Everything else on the machine while it ran (100 = one core): others' work.
        "foreign_cpu_pct": round(max(0.0, 100 * (busy - cpu - own) / wall), 1),
        "peak_tree_rss_mib": round(mem.rss / 1024, 1),
        "peak_tree_pss_mib": round(mem.pss / 1024, 1),
        "peak_process_hwm_mib": round(mem.hwm / 1024, 1), "processes": mem.procs,
        "incidents": summary["incidents"], "incident_digest": digest,
        "by_rule": {k: v.get("opened", 0) for k, v in summary["by_rule"].items()},
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def profile(state_dir: Path, start: float, hours: float, out: Path) -> None:
    """One job (in this process) over the first `hours` under pyinstrument."""
    from pyinstrument import Profiler

    os.environ["SENTINEL_STATE_DIR"] = str(state_dir)
    from sentinel.backtest.command import Options, run

    options = Options(config=CONFIG, start=_iso(start), end=_iso(start + hours * 3600),
                      json=True, jobs=1)
    profiler = Profiler(interval=0.0005)
    with open(os.devnull, "w") as sink:
        profiler.start()
        run(options, sink)
        profiler.stop()
    out.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
    print(profiler.output_text(unicode=True, color=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--days", type=float, default=7.0, help="simulated days (7)")
    parser.add_argument("--interval", type=float, default=60.0,
                        help="seconds between one device's readings (60)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--start", default=DEFAULT_START, help="period start, ISO 8601")
    parser.add_argument("--jobs", type=int, default=2, help="backtest --jobs (2)")
    parser.add_argument("--repeat", type=int, default=3, help="replays (3); medians")
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument("--regenerate", action="store_true", help="make the store again")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--profile", type=float, nargs="?", const=6.0, metavar="HOURS",
                        help="profile one job over the first HOURS (6) instead")
    parser.add_argument("--json", help="write the results here "
                        "(default bench/results/backtest-<time>.json)")
    args = parser.parse_args()

    start = datetime.fromisoformat(args.start).timestamp()
    end = start + args.days * 86400
    folder = store_dir(args.days, args.interval, args.seed, args.start)
    store = folder / "readings.sqlite3"
    if args.regenerate and folder.exists():
        shutil.rmtree(folder)
    if not store.exists():
        folder.mkdir(parents=True, exist_ok=True)
        common.log(f"generating {store} (once)")
        began = time.monotonic()
        n = generate(store, start, args.days, args.interval, args.seed)
        common.log(f"  {n:,} readings in {time.monotonic() - began:.0f} s, "
                   f"{store.stat().st_size / 2**20:,.0f} MiB")
    if args.generate_only:
        return 0
    if args.profile is not None:
        profile(folder, start, args.profile, RESULTS / "backtest-profile.txt")
        return 0
    start_iso, end_iso = _iso(start), _iso(end)
    runs = []
    for n in range(args.repeat):
        busy = common.wait_for_quiet(args.quiet_wait)
        load = os.getloadavg()
        run = replay(folder, start_iso, end_iso, args.jobs, RESULTS / "backtest-out.jsonl", [])
        run["foreign_cpu_before_pct"] = round(busy, 1)
        run["loadavg_before"] = [round(x, 2) for x in load]
        runs.append(run)
        common.log(f"  run {n + 1}: {run['readings']:,} readings in {run['wall_s']} s = "
                   f"{run['readings_per_s']:,}/s; tree RSS {run['peak_tree_rss_mib']} MiB, "
                   f"PSS {run['peak_tree_pss_mib']} MiB, largest process "
                   f"{run['peak_process_hwm_mib']} MiB; {run['incidents']} incidents "
                   f"(digest {run['incident_digest']}); CPU {run['cpu_s']} s, foreign CPU "
                   f"{run['foreign_cpu_pct']} %, load before {run['loadavg_before']}")

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    result = {"store": str(store), "days": args.days, "interval": args.interval,
              "jobs": args.jobs, "command": runs[0]["command"], "runs": runs,
              "median": {k: med(k) for k in ("wall_s", "readings_per_s", "peak_tree_rss_mib",
                                             "peak_tree_pss_mib", "peak_process_hwm_mib")}}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.json) if args.json else RESULTS / f"backtest-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    m = result["median"]
    print(f"backtest, {args.days:g} days, {runs[0]['readings']:,} readings, --jobs {args.jobs}, "
          f"median of {len(runs)}: {m['readings_per_s']:,.0f} readings/s, {m['wall_s']} s wall, "
          f"peak tree RSS {m['peak_tree_rss_mib']} MiB (PSS {m['peak_tree_pss_mib']} MiB, "
          f"largest process {m['peak_process_hwm_mib']} MiB)")
    print(f"  targets: ≥ 150,000 readings/s: {'yes' if m['readings_per_s'] >= 150_000 else 'NO'}; "
          f"< 70 s: {'yes' if m['wall_s'] < 70 else 'NO'}; "
          f"RSS < 200 MB: {'yes' if m['peak_tree_rss_mib'] * 1.048576 < 200 else 'NO'}")
    print(f"  results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
