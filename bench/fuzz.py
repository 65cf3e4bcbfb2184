"""Fuzz the decode stage: ≥ 100,000 generated payloads through the daemon's own ingest code.

    ./.venv/bin/python bench/fuzz.py                       # 200,000 payloads, seed 1
    ./.venv/bin/python bench/fuzz.py --payloads 20000      # quick check (~5 s)
    ./.venv/bin/python bench/fuzz.py --seed 7 --no-store --hang-ms 20

Every payload goes through `Ingestor.process()` (the daemon's decode → dead-letter → count
→ log → store path) with the shipped decoder and a real `SqliteReadingStore` in a temporary
directory; only the MQTT source is replaced by a list. It runs against:

* every shipped profile in `devices/profiles` and every kind each one serves, with devices
  of the shipped Shuibei inventory, and
* a few *lab* profiles (written below, loaded and checked like any deployment's; `--no-lab`
  leaves them out) that use what the shipped ones do not: selectors (`ch[id=2].v`),
  negative and chained indexes, top-level arrays, a payload-only device id with `prefix`
  and `case`, `epoch_s` / `epoch_ms` / naive ISO-8601 with `naive_timezone`, `scale`,
  `map`, vendor boolean words, `percent_of_setting`, a value profile without
  `quantity_segment`, and a custom kind with unbounded `number`, `integer` and free
  `string` fields.

Payloads are generated (seeded: the same `--seed` and `--payloads` give the same inputs, but
for times, which are relative to the start of the run),
in these modes:

* `valid`: a reading with random in-range values, encoded in the profile's format (as
  the simulator does): it must decode to the same values;
* `struct`: that message's JSON document with 1–4 structure-aware mutations: a mapped
  field, the id or the time replaced by a hostile value (wrong types, extreme and special
  numbers, numeric and boolean words, ISO-8601 edge cases, long strings, containers),
  members deleted, containers re-typed or wrapped, junk members, a scalar or array root;
  for value profiles, hostile plain values;
* `token`: raw JSON text no serializer writes, at a mapped path or anywhere: `NaN`,
  `Infinity`, `1e400`, 400-digit integers, nesting 500 to 10,000 deep, bad escapes and
  surrogates, control characters, trailing commas, truncated literals;
* `bytes`: byte-level mutation of a valid or mutated payload: bit flips, inserted,
  deleted, duplicated and swapped chunks, truncation, invalid UTF-8 sequences, a BOM;
* `topic`: a valid payload on a mutated topic: hostile ids, other devices' ids (of another
  kind or profile), case changes, missing, extra and empty levels, 10,000-character levels;
* `extreme`: zero-length, exactly at and one byte above `[ingest] max_payload_bytes`,
  1 MB, nesting 10,000 deep at the root, 60,000-character strings, 5,000-element arrays;
* `replay`: a valid message again (an exact duplicate), or with its time moved just
  inside or outside `[ingest] max_age` and `max_future_skew`.

Checked for every payload (each failure is a *violation*, listed with its payload):

* **crash**: `decode` raised anything but `DecodeError` (the daemon would dead-letter it as
  `decoder_error`, which is a defect);
* **hang**: one `decode` took longer than `--hang-ms` (50); it is re-timed three times
  alone and counted only if it stays slow ("slow once" calls are nearly always a cyclic
  garbage-collector pass that happened to run inside them; with the collector off there
  are none). A watchdog also stops the run, writing the payload, if one call takes longer
  than 10 s, or if the ingest stage stops calling the decoder for 10 s (a store write
  retried for ever);
* rejections: the reason is a decoder reason (not `decoder_error`, `store_rejected`); it is
  the one the input forces (`payload_too_large`, `empty_payload`, `no_profile`,
  `invalid_encoding` exactly for invalid UTF-8, the expected reason of a `replay` or
  `extreme` case); the detail is short; a device id given with it is in the inventory;
* every rejected payload is dead-lettered once with the same reason and payload, counted
  once in `IngestStats.rejected` and logged once (`message_rejected`); at the end the
  store's `deadletter` table holds exactly that many rows per reason;
* accepted readings: a device of the inventory whose profile matches the topic, its kind,
  only fields of that kind with the field's type, finite numbers within the range and the
  device's cap, whole `integer`s within ±2⁵³, non-empty strings among the choices, and a
  time equal to the receive time or within the `max_age` / `max_future_skew` window;
  `valid` and `replay` payloads must decode to the values encoded; the store takes every
  accepted reading (a batch it refused would be retried for ever, stopping ingestion).

It prints a summary table and writes the figures, the by-reason / by-mode / by-case tables
and the first 20 findings of each kind (with topic and base64 payload, to replay them) to
`bench/results/fuzz-<time>.json` (or `--json FILE`). Exit status 1 if there was any
violation.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import faulthandler
import gc
import json
import math
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

import common  # first: it puts src/ and tests/ on sys.path
from sentinel.config.inventory import Device
from sentinel.config.model import SqliteSettings
from sentinel.config.profiles import ProfileSpec
from sentinel.decode import Decoder
from sentinel.decode.decoder import NoValue, topic_matches
from sentinel.decode.encode import device_id_on_wire, encode
from sentinel.decode.paths import parse_path, set_path
from sentinel.errors import DecodeError
from sentinel.ingest import Ingestor
from sentinel.loading import Loaded, load_all
from sentinel.log import RejectLogger
from sentinel.store.sqlite import SqliteReadingStore
from sentinel.types import DeadLetter, RawMessage, Reading, Receipt, RejectReason, Value

from helpers import SHIPPED_CONFIG, CountingSource

R = RejectReason
# Reasons the decoder itself may give; `decoder_error` means it crashed.
DECODER_REASONS = frozenset(R) - {R.DECODER_ERROR, R.STORE_REJECTED}
EXACT_INT = 2.0 ** 53

# ---------------------------------------------------------------------------------------
# The lab: profiles, a kind and devices that use what the shipped profiles do not
# ---------------------------------------------------------------------------------------

LAB_KIND = """\
name: lab_meter
description: fuzzing only - unbounded, integer and free-text fields
fields:
  count: {type: integer}
  reading: {type: number}
  label: {type: string}
  state: {type: bool}
"""

LAB_PROFILES = {
    "lab-acme.yaml": """\
# devices/README.md's complete example: selectors, naive local time, distance to level.
name: lab-acme
kinds: [water_level]
match: ["acme/+/up"]
device_id: {topic_segment: 1}
timestamp: {path: time, format: iso8601, naive_timezone: Asia/Shanghai}
fields:
  level: {path: "data.sensors[type=ultrasonic].value", unit: cm, from_distance: true,
          required: true}
  level_percent: {path: "data.sensors[type=ultrasonic].value", unit: cm,
                  from_distance: true, percent_of_setting: tank_height_m}
  battery: {path: "data.batt[0]", unit: ratio}
  tamper: {path: "data.flags[-1]", true_values: ["T", 2], false_values: ["F", 3]}
""",
    "lab-gadget.yaml": """\
# Id only in the payload (prefix, upper case), epoch seconds, selectors, map, scale.
name: lab-gadget
kinds: [gas, lab_meter]
match: ["lab/gadget/+/data"]
device_id: {path: dev.sn, prefix: "LAB-", case: upper}
timestamp: {path: t, format: epoch_s}
publish_topic: "lab/gadget/{grid}/data"
fields:
  battery: {path: "pwr[0][1]", unit: ratio}
by_kind:
  gas:
    alarm: {path: st.alarm, true_values: ["危险", 9], false_values: ["安全"]}
    gas_type: {path: g, map: {"甲烷": CH4, "1": NG}}
    concentration_lel: {path: "ch[id=2].v", scale: 0.1}
    concentration_ppm: {path: "ch[id=3].v", unit: ppb}
  lab_meter:
    count: {path: n, required: true}
    reading: {path: x, scale: 1.0e10, offset: -1.0}
    label: {path: label, map: {"n/a": unknown}}
    state: {path: "ch[id=1].on"}
""",
    "lab-ms.yaml": """\
# A top-level array; epoch milliseconds; lower-case ids.
name: lab-ms
kinds: [elderly_watch]
match: ["lab/+/ms"]
device_id: {topic_segment: 1, case: lower}
timestamp: {path: "[0].ts", format: epoch_ms}
fields:
  heart_rate: {path: "[0].hr"}
  sos: {path: "[0].sos", true_values: [1], false_values: [0]}
  steps: {path: "[1]", required: true}
  latitude: {path: "[2].pos[0]", unit: deg}
  longitude: {path: "[2].pos[1]", unit: deg}
""",
    "lab-count.yaml": """\
# A value profile without quantity_segment: one field receives every value.
name: lab-count
kinds: [lab_meter]
match: ["lab/+/count"]
format: value
device_id: {topic_segment: 1}
fields:
  count: {scale: 1}
""",
}

LAB_INVENTORY = """\
devices:
  - {id: ACME-TNK-01, kind: water_level, community: lab, compound: lab, grid: LAB,
     profile: lab-acme, settings: {mount_height_m: 3.8, tank_height_m: 3.5}}
  - {id: ACME-TNK-02, kind: water_level, community: lab, compound: lab, grid: LAB,
     profile: lab-acme, settings: {mount_height_m: 2.0, tank_height_m: 1.5}}
  - {id: LAB-GAS-01, kind: gas, community: lab, compound: lab, grid: G1, profile: lab-gadget}
  - {id: LAB-GAS-02, kind: gas, community: lab, compound: lab, grid: G2, profile: lab-gadget}
  - {id: LAB-MTR-01, kind: lab_meter, community: lab, compound: lab, grid: G3,
     profile: lab-gadget}
  - {id: ms-watch-01, kind: elderly_watch, community: lab, compound: lab, grid: LAB,
     profile: lab-ms}
  - {id: ms-watch-02, kind: elderly_watch, community: lab, compound: lab, grid: LAB,
     profile: lab-ms}
  - {id: LAB-CNT-01, kind: lab_meter, community: lab, compound: lab, grid: LAB,
     profile: lab-count}
  - {id: LAB-SOS-01, kind: elderly_watch, community: lab, compound: lab, grid: LAB,
     profile: zigbee2mqtt-action, aliases: ["Lab SOS/按钮 1"]}
"""


def load_world(lab_dir: Path | None) -> Loaded:
    """The shipped configuration, plus the lab files written into lab_dir (if given)."""
    if lab_dir is None:
        return load_all(SHIPPED_CONFIG, {})
    (lab_dir / "kinds").mkdir(parents=True, exist_ok=True)
    (lab_dir / "profiles").mkdir(exist_ok=True)
    (lab_dir / "kinds" / "lab_meter.yaml").write_text(LAB_KIND, encoding="utf-8")
    for name, text in LAB_PROFILES.items():
        (lab_dir / "profiles" / name).write_text(text, encoding="utf-8")
    (lab_dir / "inventory.yaml").write_text(LAB_INVENTORY, encoding="utf-8")
    shipped = load_all(SHIPPED_CONFIG, {})
    env = {
        "SENTINEL_DEVICES__INVENTORY": json.dumps(
            [str(p) for p in shipped.settings.devices.inventory]
            + [str(lab_dir / "inventory.yaml")]),
        "SENTINEL_DEVICES__PROFILE_DIRS": json.dumps(
            [str(p) for p in shipped.settings.devices.profile_dirs]
            + [str(lab_dir / "profiles")]),
        "SENTINEL_DEVICES__KIND_DIRS": json.dumps(
            [str(p) for p in shipped.settings.devices.kind_dirs] + [str(lab_dir / "kinds")]),
    }
    return load_all(SHIPPED_CONFIG, env)


# ---------------------------------------------------------------------------------------
# Cases: one per (profile, kind) with the devices and paths it uses
# ---------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str  # "profile/kind"
    profile: ProfileSpec
    kind: str
    devices: list[Device]
    paths: list[str]  # id, time and field paths the profile reads for this kind
    quantities: list[str]  # value profiles with quantity_segment

    @property
    def is_json(self) -> bool:
        return self.profile.format == "json"

    def __repr__(self) -> str:
        return f"Case({self.name})"


def build_cases(world: Loaded) -> list[Case]:
    by_pk: dict[tuple[str, str], list[Device]] = {}
    for device in world.inventory.values():
        for name in device.profiles:
            by_pk.setdefault((name, device.kind), []).append(device)
    cases = []
    for (pname, kind), devices in sorted(by_pk.items()):
        profile = world.profiles[pname]
        fields = world.kinds[kind].fields
        mappings = {n: m for n, m in profile.fields_for(kind).items() if n in fields}
        paths = [m.path for m in mappings.values() if m.path]
        if profile.device_id.path:
            paths.append(profile.device_id.path)
        if profile.timestamp:
            paths.append(profile.timestamp.path)
        quantities = [m.quantity for m in mappings.values() if m.quantity]
        step = max(1, len(devices) // 25)  # a spread of devices, not all 747 detectors
        cases.append(Case(f"{pname}/{kind}", profile, kind, devices[::step],
                          list(dict.fromkeys(paths)), quantities))
    return cases


def valid_values(world: Loaded, case: Case, device: Device, rng: random.Random
                 ) -> dict[str, Value]:
    """Random in-range canonical values for a random non-empty subset of the case's fields."""
    kind = world.kinds[case.kind]
    mappings = case.profile.fields_for(case.kind)
    names = [n for n in mappings if n in kind.fields and n != "level_percent"]
    required = [n for n in names if mappings[n].required]
    chosen = set(rng.sample(names, rng.randint(1, len(names)))) | set(required)
    # Fields read from one place (Traccar's `alarm` word is `sos` or `fall`) cannot be set
    # apart: one of them per place.
    by_place: dict[str | None, str] = {}
    for name in sorted(chosen, key=lambda n: (n not in required, n)):
        by_place.setdefault(mappings[name].path or mappings[name].quantity or name, name)
    chosen = set(by_place.values())
    out: dict[str, Value] = {}
    for name in sorted(chosen):
        spec = kind.fields[name]
        if spec.type == "bool":
            out[name] = rng.random() < 0.5
        elif spec.type == "string":
            out[name] = rng.choice(sorted(spec.choices)) if spec.choices else rng.choice(
                ["x", "水贝", "label-7", "unknown"])
        else:
            lo = spec.min if spec.min is not None else -1e6
            hi = spec.max if spec.max is not None else 1e6
            if spec.max_setting is not None:
                cap = device.settings.number(spec.max_setting)
                hi = min(hi, cap) if cap is not None else hi
            if spec.type == "integer":
                out[name] = rng.randint(int(lo), int(min(hi, 1e6)))
            else:  # the decoder keeps a field's precision
                out[name] = round(rng.uniform(lo, hi),
                                  6 if spec.precision is None else spec.precision)
    return out


# ---------------------------------------------------------------------------------------
# Hostile material
# ---------------------------------------------------------------------------------------

SPECIAL_NUMBERS: list[Any] = [
    0, -0.0, 1, -1, 2, 9, 100, 101, -40.1, 150.5, 300.5, 1e6 + 1, 0.1, 1e-300, 5e-324,
    2 ** 31, 2 ** 53 + 1, 2 ** 63 - 1, 2 ** 64 - 1, -(2 ** 63), 1e11, 1e11 - 1, 1e14, 1e17,
    1.7976931348623157e308, -1.7976931348623157e308, 1e308, -1e308, 3.4e38, 1e16 + 0.5,
]

WORDS = [
    "", " ", "\t\n", "NaN", "nan", "-nan", "Infinity", "-Infinity", "inf", "+inf", "1e400",
    "-1e400", "1e-400", "0x1A", "1_000", "٣", "５０", "1,5", "1.5.6", "--1", "+1", ".5", "5.",
    "ON", "OFF", "on ", " True", "yes", "Y", "n", "2", "2.0", "1.5", "0", "1", "-0", "报警",
    "正常", "FIRE", "ALARM", "NORMAL", "危险", "安全", "T", "F", "甲烷", "CH4", "XX", "co",
    "\u0000", "\ufeff1", "\u200b", "null", "[]", "{}", "true", "false", "😀", "\U0010ffff",
    "a\u0300", "ß", "İ", "n/a", "unknown",
]

TIMES: list[Any] = [
    "2026-11-23T09:12:01+08:00", "2026-11-23T01:02:03.456789012Z", "2026-11-23 09:12:01",
    "2026-11-23T09:12:01", "2026-02-30T00:00:00Z", "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999+14:00",
    "9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59", "0001-01-01", "2026-W47-1",
    "20261123T091201Z", "2026-11-23T09:12:01+24:00", "2026-11-23T09:12:01.1234567890123Z",
    "2026-11-23T25:00:00Z", "1795395600", "1795395600000", " 1795395600 ", "1795395600.5",
    "1e10", "1e11", "1e14", "1e17", "1e400", "-1", "-0", "0", "NaN", "inf", "now", "",
    "yesterday", "1_795_395_600", 0, -1, -0.0, 1e11, 1e11 + 1, 1e14, 1e17, 2 ** 63 - 1,
    2 ** 64 - 1, 1.7976931348623157e308, 1795395600, 1795395600000, 1795395600.123, True,
    None, [], {}, [1795395600], {"ts": 1795395600},
]

RAW_TOKENS: list[bytes] = [
    b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"inf", b"nan", b"1e400", b"-1e400",
    b"1e-400", b"1E+309", b"2.5e-324", b"1" + b"0" * 30, b"1" + b"0" * 400,
    b"-" + b"9" * 25, b"9" * 5000, b"0." + b"0" * 5000 + b"1", b"1" + b"0" * 308,
    b"18446744073709551616", b"-9223372036854775809", b"0x10", b"01", b"00", b"+1", b".5",
    b"1.", b"-", b"--1", b"1e", b"1e+", b"0e0", b"-0.0e-0", b"True", b"None", b"undefined",
    b"'single'", b'"unterminated', b'"\\ud800"', b'"\\udc00\\ud800"', b'"\\u0000"',
    b'"\\x41"', b'"\\u12"', b'"tab\tinside"', b'"line\ninside"', b'"\x7f"', b"[1,]", b"[,1]",
    b'{"a":1,}', b'{"a" 1}', b'{"a":1,"a":true}', b"/* comment */ 1", b"[1 2]", b"{}", b"[]",
    b'"\xef\xbb\xbf1"', b"tru", b"nul", b"[" * 500 + b"]" * 500, b"[" * 1023 + b"]" * 1023,
    b"[" * 1024 + b"]" * 1024, b"[" * 1025 + b"]" * 1025, b"[" * 10_000 + b"]" * 10_000,
    b'{"a":' * 1000 + b"1" + b"}" * 1000, b'{"a":' * 1100 + b"1" + b"}" * 1100,
    b"[" * 10_000, b"[0" + b",0" * 5000 + b"]",
]

BAD_UTF8: list[bytes] = [
    b"\xff", b"\xfe", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
    b"\xe4\xb8", b"\x80", b"\xc3", b"\xf8\x88\x80\x80\x80",
]


def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON-serialisable value that a field, id or time should not be (or barely is)."""
    roll = rng.random()
    if roll < 0.25:
        return rng.choice(SPECIAL_NUMBERS)
    if roll < 0.35:
        return rng.choice([rng.uniform(-1e6, 1e6), rng.gauss(0, 100), rng.uniform(-1e13, 1e13),
                           rng.randint(-(2 ** 63), 2 ** 64 - 1), rng.randint(-1000, 1000)])
    if roll < 0.45:
        return rng.choice([True, False, None])
    if roll < 0.70:
        return rng.choice(WORDS)
    if roll < 0.75:
        return rng.choice(TIMES)
    if roll < 0.80:
        return rng.choice(["9" * rng.randint(20, 5000), "a" * rng.randint(100, 20_000),
                           "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(1, 40))),
                           repr(rng.uniform(-1e3, 1e3)), str(rng.randint(-10**40, 10**40))])
    if depth > 3 or roll < 0.85:
        return rng.choice([[], {}, [None], {"": None}, [[]], {"value": {}}])
    if roll < 0.93:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randint(1, 4))]
    keys = ["", "value", "v", "id", "type", "0", "ts", "🔥"]
    return {rng.choice(keys): hostile_value(rng, depth + 1) for _ in range(rng.randint(1, 4))}


def hostile_id(rng: random.Random, world: Loaded, case: Case) -> Any:
    roll = rng.random()
    device = rng.choice(case.devices)
    if roll < 0.45:
        other = rng.choice(list(world.inventory.values()))
        wire = device_id_on_wire(world.profiles[other.profile], other)
        return rng.choice([other.id, wire, other.id.lower(), other.id.upper(), wire + " ",
                           " " + wire, wire[:-1], wire + "0", wire.swapcase()])
    if roll < 0.6:
        return rng.choice(["", " ", "\t", "SB-SMK-0001\u0000", "ＳＢ-SMK-0001", "ß", "ı", "bridge",
                           "LAB-lab-gas-01", "lab-gas-01", "gas-01", "x" * rng.randint(65, 10_000),
                           "sb-smk-0001", "MS-WATCH-01", "..", "🔥"])
    if roll < 0.85:
        return device_id_on_wire(case.profile, device)
    return hostile_value(rng)


# ---------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------


@dataclass
class Sample:
    mode: str
    case: str
    topic: str
    payload: bytes
    expect_values: dict[str, Value] | None = None  # must decode to these (approximately)
    expect_device: str | None = None
    expect_reason: RejectReason | None = None
    note: str = ""


_PLACEHOLDER = "@@TOKEN{}@@"


class Fuzzer:
    """Seeded generator of hostile messages for the cases of a world."""

    def __init__(self, world: Loaded, cases: list[Case], rng: random.Random, now: float) -> None:
        self.world = world
        self.cases = cases
        self.rng = rng
        self.now = now
        ingest = world.settings.ingest
        self.max_payload = ingest.max_payload_bytes
        self.max_age = ingest.max_age
        self.max_future = ingest.max_future_skew
        self._last_valid: Sample | None = None
        self.modes = [("valid", 6), ("struct", 38), ("token", 14), ("bytes", 20),
                      ("topic", 10), ("extreme", 2), ("replay", 10)]
        self._mode_names = [m for m, _ in self.modes]
        self._mode_weights = [w for _, w in self.modes]

    def __iter__(self) -> Iterator[Sample]:
        return self

    def __next__(self) -> Sample:
        rng = self.rng
        mode = rng.choices(self._mode_names, self._mode_weights)[0]
        case = rng.choice(self.cases)
        return getattr(self, f"_{mode}")(case)

    # -- a valid message ----------------------------------------------------------------

    def _encoded(self, case: Case, ts: float | None = None) -> tuple[Device, dict[str, Value],
                                                                   str, bytes]:
        rng = self.rng
        device = rng.choice(case.devices)
        values = valid_values(self.world, case, device, rng)
        if ts is None:
            ts = round(self.now - rng.uniform(0, 3600), 3)
        messages = encode(case.profile, device, values, ts, self.world.kinds)
        if case.is_json:
            (topic, payload), = messages
            return device, values, topic, payload
        # One plain value per message: keep the values of the one picked.
        index = rng.randrange(len(messages))
        topic, payload = messages[index]
        mappings = case.profile.fields_for(case.kind)
        sent = [n for n in mappings if n in values and n in self.world.kinds[case.kind].fields]
        name = sent[index]
        return device, {name: values[name]}, topic, payload

    def _valid(self, case: Case) -> Sample:
        device, values, topic, payload = self._encoded(case)
        sample = Sample("valid", case.name, topic, payload, values, device.id)
        self._last_valid = sample
        return sample

    # -- structure-aware mutation ------------------------------------------------------

    def _struct(self, case: Case) -> Sample:
        _, _, topic, payload = self._encoded(case)
        if not case.is_json:
            return Sample("struct", case.name, topic, self._plain(payload))
        doc = orjson.loads(payload)
        for _ in range(self.rng.randint(1, 4)):
            doc = self._mutate(case, doc)
        return Sample("struct", case.name, topic, self._serialise(doc))

    def _plain(self, payload: bytes) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.5:
            value = hostile_value(rng)
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            data = text.encode("utf-8", "surrogatepass")
        elif roll < 0.7:
            data = rng.choice(RAW_TOKENS)
        elif roll < 0.85:
            data = rng.choice([b" ", b"\t", b"\r\n", b"\x00", b"\xef\xbb\xbf"]) + payload + \
                rng.choice([b"", b" ", b"\n", b"\x00", b"\xff"])
        else:
            data = payload * rng.randint(2, 50)
        return data

    def _mutate(self, case: Case, doc: Any) -> Any:
        rng = self.rng
        op = rng.choices(["set", "delete", "slot", "drop", "wrap", "retype", "junk", "root",
                          "id", "time"], [10, 2, 4, 2, 2, 2, 1, 1, 3, 3])[0]
        if op in ("set", "id", "time") and type(doc) in (dict, list):
            if op == "id" and case.profile.device_id.path:
                path, value = case.profile.device_id.path, hostile_id(rng, self.world, case)
            elif op == "time" and case.profile.timestamp:
                path, value = case.profile.timestamp.path, self._hostile_time()
            else:
                path, value = rng.choice(case.paths), hostile_value(rng)
            with contextlib.suppress(Exception):  # the document may no longer fit the path
                _set(doc, path, value)
            return doc
        if op == "delete" and case.paths:
            _delete(doc, rng.choice(case.paths))
            return doc
        slots = _slots(doc)
        if op == "root" or not slots:
            return rng.choice([hostile_value(rng), [doc], [doc, doc], {"data": doc}, None])
        container, key = rng.choice(slots)
        if op == "slot":
            container[key] = hostile_value(rng)
        elif op == "drop":
            del container[key]
        elif op == "wrap":
            container[key] = rng.choice([[container[key]], {"value": container[key]}])
        elif op == "retype":
            value = container[key]
            if type(value) is dict:
                container[key] = list(value.values())
            elif type(value) is list:
                container[key] = {str(i): v for i, v in enumerate(value)}
            else:
                container[key] = str(value) if not isinstance(value, str) else [value]
        elif type(doc) is dict:  # junk members
            for i in range(rng.choice([1, 10, 1000])):
                doc[f"junk{i}"] = hostile_value(rng, 3)
        return doc

    def _hostile_time(self) -> Any:
        rng = self.rng
        if rng.random() < 0.5:
            return rng.choice(TIMES)
        shift = rng.choice([-self.max_age - 1, -self.max_age + 5, self.max_future + 1,
                            self.max_future - 5, -30 * 86400, 365 * 86400, -self.now])
        ts = self.now + shift
        return rng.choice([ts, round(ts * 1000), str(ts), str(round(ts * 1000))])

    def _serialise(self, doc: Any, tokens: Sequence[bytes] = ()) -> bytes:
        rng = self.rng
        try:
            data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 if rng.random() < 0.1 else 0)
        except orjson.JSONEncodeError:
            data = b'{"unserialisable":true}'
        for i, token in enumerate(tokens):
            data = data.replace(b'"' + _PLACEHOLDER.format(i).encode() + b'"', token)
        roll = rng.random()
        if roll < 0.03:
            data = b"\xef\xbb\xbf" + data
        elif roll < 0.06:
            data = rng.choice([b" ", b"\n", b"\r\n\t"]) + data + rng.choice([b"", b" ", b"\n"])
        elif roll < 0.08:
            data += rng.choice([b"\x00", b"x", b"}", b"]", b",", b" {}"])
        return data

    # -- raw JSON tokens ---------------------------------------------------------------

    def _token(self, case: Case) -> Sample:
        rng = self.rng
        _, _, topic, payload = self._encoded(case)
        if not case.is_json:
            return Sample("token", case.name, topic, rng.choice(RAW_TOKENS))
        doc = orjson.loads(payload)
        tokens = [rng.choice(RAW_TOKENS) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        for i in range(len(tokens)):
            placeholder = _PLACEHOLDER.format(i)
            slots = _slots(doc)
            if rng.random() < 0.7 and type(doc) in (dict, list):
                with contextlib.suppress(Exception):
                    _set(doc, rng.choice(case.paths), placeholder)
                    continue
            if slots:
                container, key = rng.choice(slots)
                container[key] = placeholder
            else:
                doc = placeholder
        return Sample("token", case.name, topic, self._serialise(doc, tokens))

    # -- bytes ---------------------------------------------------------------------------

    def _bytes(self, case: Case) -> Sample:
        rng = self.rng
        base = self._struct(case) if rng.random() < 0.3 else self._valid(case)
        data = bytearray(base.payload)
        for _ in range(rng.choice([1, 1, 2, 3, 5, 8])):
            op = rng.randrange(9)
            n = len(data)
            at = rng.randint(0, n)
            if op == 0 and n:  # bit flip
                i = rng.randrange(n)
                data[i] ^= 1 << rng.randrange(8)
            elif op == 1 and n:  # random byte
                data[rng.randrange(n)] = rng.randrange(256)
            elif op == 2:  # insert random bytes
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif op == 3 and n:  # delete a chunk
                del data[at:at + rng.randint(1, 16)]
            elif op == 4 and n:  # duplicate a chunk
                chunk = data[at:at + rng.randint(1, 32)]
                data[at:at] = chunk * rng.randint(1, 4)
            elif op == 5:  # truncate
                del data[rng.randint(0, n):]
            elif op == 6:  # invalid UTF-8
                data[at:at] = rng.choice(BAD_UTF8)
            elif op == 7:  # JSON punctuation
                data[at:at] = rng.choice([b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"-"])
            elif op == 8 and n > 2:  # swap two chunks
                i, j = sorted(rng.sample(range(n), 2))
                k = rng.randint(1, min(8, j - i) or 1)
                data[i:i + k], data[j:j + k] = data[j:j + k], data[i:i + k]
        if rng.random() < 0.03:
            data[0:0] = b"\xef\xbb\xbf"
        return Sample("bytes", case.name, base.topic, bytes(data))

    # -- topics --------------------------------------------------------------------------

    def _topic(self, case: Case) -> Sample:
        rng = self.rng
        _, _, topic, payload = self._encoded(case)
        levels = topic.split("/")
        op = rng.randrange(6)
        seg = case.profile.device_id.topic_segment
        if op <= 1 and seg is not None:
            ident = hostile_id(rng, self.world, case)
            levels[seg] = _topic_text(ident)
        elif op == 2 and case.profile.quantity_segment is not None:
            levels[case.profile.quantity_segment] = _topic_text(
                rng.choice([*case.quantities, "uptime", "", "PIPE_PRESSURE", hostile_value(rng)]))
        elif op == 3:
            i = rng.randint(0, len(levels))
            levels[i:i] = [rng.choice(["", "x", "+x", "telemetry", "🔥"])]
        elif op == 4 and len(levels) > 1:
            del levels[rng.randrange(len(levels))]
        else:
            i = rng.randrange(len(levels))
            levels[i] = rng.choice(["", " ", "X" * rng.choice([1, 300, 10_000]), levels[i].upper(),
                                    "devices", "v1"])
        return Sample("topic", case.name, "/".join(levels), payload)

    # -- size and nesting ------------------------------------------------------------------

    def _extreme(self, case: Case) -> Sample:
        rng = self.rng
        device, values, topic, payload = self._encoded(case)
        op = rng.randrange(8)
        if op == 0:
            return Sample("extreme", case.name, topic, b"", expect_reason=R.EMPTY_PAYLOAD)
        if op in (1, 2):
            # Padded with whitespace to the limit (accepted) or one byte over it.
            size = self.max_payload + (0 if op == 1 else 1)
            padded = payload + b" " * max(0, size - len(payload))
            if op == 1 and case.is_json:
                return Sample("extreme", case.name, topic, padded, values, device.id,
                              note="exactly max_payload_bytes")
            if op == 2:
                return Sample("extreme", case.name, topic, padded,
                              expect_reason=R.PAYLOAD_TOO_LARGE)
            return Sample("extreme", case.name, topic, padded)
        if op == 3:
            big = b'{"x":"' + b"a" * (1024 * 1024) + b'"}'
            return Sample("extreme", case.name, topic, big, expect_reason=R.PAYLOAD_TOO_LARGE)
        if op == 4:
            deep = rng.choice([b"[" * 10_000 + b"]" * 10_000,
                               b'{"a":' * 10_000 + b"1" + b"}" * 10_000])
            return Sample("extreme", case.name, topic, deep,
                          expect_reason=R.INVALID_JSON if case.is_json else None)
        if not case.is_json:
            return Sample("extreme", case.name, topic, b"9" * (self.max_payload - 1))
        doc = orjson.loads(payload)
        filler: Any = rng.choice(["x" * 60_000, [0] * 5000, {f"k{i}": i for i in range(3000)}])
        with contextlib.suppress(Exception):
            _set(doc, rng.choice(case.paths), filler)
        return Sample("extreme", case.name, topic, self._serialise(doc))

    # -- replays and the time window -------------------------------------------------------

    def _replay(self, case: Case) -> Sample:
        rng = self.rng
        last = self._last_valid
        if last is not None and rng.random() < 0.3:
            again = Sample("replay", last.case, last.topic, last.payload, last.expect_values,
                           last.expect_device, note="exact duplicate")
            return again
        if case.profile.timestamp is None:
            return self._valid(case)
        offsets = [(-self.max_age - 60, R.TIMESTAMP_TOO_OLD), (-30 * 86400, R.TIMESTAMP_TOO_OLD),
                   (-self.max_age + 60, None), (self.max_future + 60, R.TIMESTAMP_IN_FUTURE),
                   (365 * 86400, R.TIMESTAMP_IN_FUTURE), (self.max_future - 60, None)]
        offset, reason = rng.choice(offsets)
        device, values, topic, payload = self._encoded(case, ts=round(self.now + offset, 3))
        if reason is None:
            return Sample("replay", case.name, topic, payload, values, device.id,
                          note=f"time {offset:+.0f} s")
        return Sample("replay", case.name, topic, payload, expect_reason=reason,
                      note=f"time {offset:+.0f} s")


def _topic_text(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    # What an MQTT broker can deliver on a subscribed filter: no wildcards, no NUL, no "/".
    return text.translate({ord("/"): "_", ord("+"): "_", ord("#"): "_", 0: "_"})


def _slots(doc: Any, limit: int = 300) -> list[tuple[Any, Any]]:
    """(container, key) of every member and element, breadth first, at most `limit`."""
    out: list[tuple[Any, Any]] = []
    todo = [doc]
    while todo and len(out) < limit:
        node = todo.pop()
        if type(node) is dict:
            items: Any = node.items()
        elif type(node) is list:
            items = enumerate(node)
        else:
            continue
        for key, value in items:
            out.append((node, key))
            todo.append(value)
    return out


def _set(doc: Any, path: str, value: Any) -> None:
    if type(doc) is list:
        # set_path wants an object at the root; a top-level array path starts with [i].
        wrapper = {"_": doc}
        set_path(wrapper, "_" + path if path.startswith("[") else "_." + path, value)
    else:
        set_path(doc, path, value)


def _delete(doc: Any, path: str) -> None:
    node = doc
    steps = parse_path(path)
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if (step[0] == "key" and type(node) is dict and step[1] in node) or (
                step[0] == "index" and type(node) is list and -len(node) <= step[1] < len(node)):
            if last:
                del node[step[1]]
                return
            node = node[step[1]]
        elif step[0] == "select" and type(node) is list:
            found = [x for x in node if type(x) is dict and str(x.get(step[1])) == step[2]]
            if not found:
                return
            node = found[0]
        else:
            return


# ---------------------------------------------------------------------------------------
# The oracle
# ---------------------------------------------------------------------------------------


class Oracle:
    """What must hold for a message and its outcome, whatever the message was."""

    def __init__(self, world: Loaded) -> None:
        self.world = world
        ingest = world.settings.ingest
        self.max_payload = ingest.max_payload_bytes
        self.max_age = ingest.max_age
        self.max_future = ingest.max_future_skew
        self.filters = {name: [f.split("/") for f in p.match]
                        for name, p in world.profiles.items()}
        self.excludes = {name: [f.split("/") for f in p.exclude]
                         for name, p in world.profiles.items()}

    def excluded(self, topic: str) -> bool:
        """Every profile whose filters match the topic excludes it (and one matches)."""
        levels = topic.split("/")
        matching = [name for name, filters in self.filters.items()
                    if any(topic_matches(f, levels) for f in filters)]
        return bool(matching) and all(any(topic_matches(f, levels) for f in self.excludes[n])
                                      for n in matching)

    def forced_reason(self, topic: str, payload: bytes) -> RejectReason | None:
        """The reason the input alone forces, before any profile is read."""
        if len(payload) > self.max_payload:
            return R.PAYLOAD_TOO_LARGE
        if not payload:
            return R.EMPTY_PAYLOAD
        levels = topic.split("/")
        if not any(topic_matches(f, levels) for fs in self.filters.values() for f in fs):
            return R.NO_PROFILE
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return R.INVALID_ENCODING
        return None

    def check(self, sample: Sample, received_at: float, outcome: object
              ) -> list[tuple[str, str]]:
        """(category, detail) of every property the outcome breaks."""
        problems: list[tuple[str, str]] = []
        forced = self.forced_reason(sample.topic, sample.payload)
        if isinstance(outcome, Reading):
            if forced is not None:
                problems.append(("accepted, but the input forces a reason", str(forced)))
            if sample.expect_reason is not None:
                problems.append(("accepted, expected a rejection", str(sample.expect_reason)))
            problems += [("reading breaks an invariant", p)
                         for p in self.check_reading(sample, outcome, received_at)]
        elif isinstance(outcome, DecodeError):
            reason = outcome.reason
            if reason not in DECODER_REASONS:
                problems.append(("not a decoder reason", str(reason)))
            if forced is not None and reason is not forced:
                problems.append(("reason differs from the one the input forces",
                                 f"{reason}, forced {forced}"))
            if forced is None and reason is R.INVALID_ENCODING:
                problems.append(("valid UTF-8 rejected as invalid_encoding", outcome.detail))
            if sample.expect_reason is not None and reason is not sample.expect_reason:
                problems.append(("reason differs from the expected one",
                                 f"{reason}, expected {sample.expect_reason}"))
            if sample.expect_values is not None:
                problems.append(("rejected, expected a reading", f"{reason}: {outcome.detail}"))
            if not isinstance(outcome.detail, str) or not outcome.detail \
                    or len(outcome.detail) > 500:
                problems.append(("detail missing or too long", str(outcome.detail)[:200]))
            if outcome.device_id is not None and outcome.device_id not in self.world.inventory:
                problems.append(("dead letter names a device not in the inventory",
                                 f"{outcome.reason}: {str(outcome.device_id)[:60]!r}"))
        elif isinstance(outcome, NoValue):
            if forced is not None or sample.expect_reason is not None:
                problems.append(("no value, but the input forces a reason",
                                 str(forced or sample.expect_reason)))
            if sample.expect_values is not None:
                problems.append(("no value, expected a reading", str(sample.expect_values)))
            if outcome.device_id not in self.world.inventory:
                problems.append(("no value of a device not in the inventory",
                                 str(outcome.device_id)[:60]))
        elif outcome == []:
            if not self.excluded(sample.topic):
                problems.append(("ignored a topic no profile excludes", sample.topic[:120]))
        elif not isinstance(outcome, Exception):  # other exceptions are counted as crashes
            problems.append(("decode returned neither", type(outcome).__name__))
        return problems

    def check_reading(self, sample: Sample, r: Reading, received_at: float) -> list[str]:
        problems: list[str] = []
        device = self.world.inventory.get(r.device_id)
        if device is None:
            return [f"reading of unknown device {r.device_id[:60]!r}"]
        if r.kind != device.kind:
            problems.append(f"kind {r.kind} but the device is a {device.kind}")
        levels = sample.topic.split("/")
        if not any(topic_matches(f, levels) for p in device.profiles for f in self.filters[p]):
            problems.append(f"topic does not match the device's profiles {device.profiles}")
        if not r.values:
            problems.append("reading without values")
        fields = self.world.kinds.compiled(device.kind)
        for name, value in r.values.items():
            spec = fields.get(name)
            if spec is None:
                problems.append(f"{name} is not a field of {device.kind}")
                continue
            problems += _check_value(name, value, spec, device)
        if not math.isfinite(r.ts) or not (
                r.ts == received_at
                or received_at - self.max_age <= r.ts <= received_at + self.max_future):
            problems.append(f"time {r.ts!r} outside the accepted window")
        if sample.expect_device is not None and r.device_id != sample.expect_device:
            problems.append(f"device {r.device_id}, expected {sample.expect_device}")
        if sample.expect_values is not None:
            for name, want in sample.expect_values.items():
                got = r.values.get(name)
                if isinstance(want, float) and not isinstance(want, bool):
                    if not isinstance(got, float) or not math.isclose(
                            got, want, rel_tol=1e-9, abs_tol=1e-9):
                        problems.append(f"{name}: {got!r}, expected {want!r}")
                elif got != want or type(got) is not type(want):
                    problems.append(f"{name}: {got!r}, expected {want!r}")
        return problems


def _check_value(name: str, value: Value, spec: Any, device: Device) -> list[str]:
    t = spec.type
    if t == "bool":
        return [] if type(value) is bool else [f"{name}: {value!r} is not a bool"]
    if t == "string":
        if type(value) is not str or not value:
            return [f"{name}: {value!r} is not non-empty text"]
        if spec.choices is not None and value not in spec.choices:
            return [f"{name}: {value!r} not among the choices"]
        return []
    if t == "integer" and (type(value) is not int or abs(value) > EXACT_INT):
        return [f"{name}: {value!r} is not an integer within ±2**53"]
    if t == "number" and type(value) is not float:
        return [f"{name}: {value!r} is not a float"]
    number = float(value)
    if not math.isfinite(number) or not spec.lo <= number <= spec.hi:
        return [f"{name}: {value!r} outside [{spec.lo}, {spec.hi}]"]
    if spec.max_setting is not None:
        cap = device.settings.number(spec.max_setting)
        if cap is not None and number > cap:
            return [f"{name}: {value!r} above {spec.max_setting} {cap}"]
    return []


# ---------------------------------------------------------------------------------------
# Running payloads through the ingest stage
# ---------------------------------------------------------------------------------------


class TimedDecoder:
    """The real decoder, timing each call and keeping its outcome (reading or exception)."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.outcomes: list[tuple[float, object]] = []
        self.current: RawMessage | None = None
        self.calls = 0
        self.in_call = False

    def decode(self, msg: RawMessage) -> list[Reading]:
        self.current = msg
        self.calls += 1
        self.in_call = True
        started = time.perf_counter()
        try:
            readings = self.decoder.decode(msg)
        except Exception as exc:
            self.outcomes.append((time.perf_counter() - started, exc))
            raise
        finally:
            self.in_call = False
        # The fuzzed profiles carry one reading per message (no `each`): anything else is
        # a finding ("decode returned neither").
        outcome = readings[0] if len(readings) == 1 else readings
        self.outcomes.append((time.perf_counter() - started, outcome))
        return readings


class RecordingSink:
    """Keeps the last batch written, then hands it to the real store (if any).

    A batch the store refuses would be retried for ever by the ingest stage (the daemon's
    ingestion would stop); here the refused readings are found one by one and reported."""

    def __init__(self, store: SqliteReadingStore | None) -> None:
        self.store = store
        self.readings: list[Reading] = []
        self.dead: list[DeadLetter] = []
        self.refused: dict[int, str] = {}  # id(reading) → error

    async def write(self, readings: Sequence[Reading], dead: Sequence[DeadLetter],
                    receipts: Sequence[Receipt] = ()) -> None:
        self.readings, self.dead = list(readings), list(dead)
        self.refused = {}
        if self.store is None:
            return
        try:
            await self.store.write(readings, dead)
        except Exception:
            await self.store.write([], dead)
            for reading in readings:
                try:
                    await self.store.write([reading], [])
                except Exception as exc:
                    self.refused[id(reading)] = f"{type(exc).__name__}: {exc}"

    async def receipts(self) -> list[Receipt]:
        return []

    async def run(self) -> None:
        pass

    def health(self) -> dict[str, object]:
        return {}


class CountingLog:
    """Stands in for the ingest logger under RejectLogger: counts message_rejected lines."""

    def __init__(self) -> None:
        self.lines: collections.Counter[str] = collections.Counter()

    def warning(self, event: str, **kw: Any) -> None:
        if event == "message_rejected":
            self.lines[kw["reason"]] += 1
        else:
            self.lines[event] += 1


@dataclass
class Report:
    payloads: int = 0
    accepted: int = 0
    rejected: int = 0
    # Acknowledged with neither a reading nor a dead letter: an excluded topic, or a message
    # whose every field is an `absent` word (NoValue).
    unstored: int = 0
    crashes: int = 0
    hangs: int = 0
    slow_retimed: int = 0
    violations: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0
    max_decode_ms: float = 0.0
    slowest: dict[str, Any] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    by_mode: dict[str, dict[str, int]] = field(default_factory=dict)
    by_case: dict[str, dict[str, int]] = field(default_factory=dict)
    dead_letters: int = 0
    counted: int = 0
    logged: int = 0
    acked: int = 0
    store_deadletters: dict[str, int] | None = None
    store_readings: int | None = None
    distinct_keys: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    finding_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.violations == 0 and self.crashes == 0 and self.hangs == 0


def _record(report: Report, kind: str, category: str, sample: Sample, detail: str,
            per_category: int = 20) -> None:
    """Count a finding under `kind: category`; keep the first few of each with the payload."""
    key = f"{kind}: {category}"
    seen = report.finding_kinds.get(key, 0)
    report.finding_kinds[key] = seen + 1
    if kind != "hang" and kind != "crash":
        report.violations += 1
    if seen < per_category:
        report.findings.append({
            "kind": kind, "detail": detail[:2000], "mode": sample.mode, "case": sample.case,
            "note": sample.note, "topic": sample.topic[:300], "payload_size": len(sample.payload),
            "payload_b64": base64.b64encode(sample.payload[:100_000]).decode()})


class Watchdog:
    """Stops the run (writing the payload) if one decode call takes longer than `limit` s."""

    def __init__(self, decoder: TimedDecoder, limit: float, out: Path) -> None:
        self.decoder, self.limit, self.out = decoder, limit, out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="fuzz-watchdog")

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _watch(self) -> None:
        seen, since = -1, time.monotonic()
        while not self._stop.wait(0.5):
            calls = self.decoder.calls
            if calls != seen:
                seen, since = calls, time.monotonic()
            elif time.monotonic() - since > self.limit and not self.decoder.in_call:
                print(f"STUCK: no decode call for > {self.limit:g} s, and none running: the "
                      "ingest stage is stuck elsewhere", file=sys.stderr, flush=True)
                faulthandler.dump_traceback(all_threads=True)
                os._exit(3)
            elif time.monotonic() - since > self.limit and self.decoder.current is not None:
                msg = self.decoder.current
                self.out.write_text(json.dumps({
                    "hang": True, "topic": msg.topic,
                    "payload_b64": base64.b64encode(msg.payload).decode()}))
                print(f"HANG: one decode call ran for > {self.limit:g} s; payload written to "
                      f"{self.out}", file=sys.stderr, flush=True)
                faulthandler.dump_traceback(all_threads=True)
                os._exit(3)


def _quiet_structlog() -> None:
    def drop(logger: Any, method: str, event: Any) -> Any:
        raise structlog.DropEvent

    structlog.configure(processors=[drop], cache_logger_on_first_use=False)


async def run_fuzz(world: Loaded, payloads: int, seed: int, *, store_dir: Path | None,
                   hang_ms: float = 50.0, batch: int = 500, progress: bool = False,
                   watchdog_file: Path | None = None, cases: list[Case] | None = None
                   ) -> Report:
    """Generate `payloads` messages, ingest them in batches, check every outcome."""
    cases = cases if cases is not None else build_cases(world)
    now = time.time()
    fuzzer = Fuzzer(world, cases, random.Random(seed), now)
    oracle = Oracle(world)
    decoder = TimedDecoder(Decoder(world.profiles, world.inventory, world.kinds,
                                   world.settings.ingest))
    store = None
    if store_dir is not None:
        store = SqliteReadingStore(SqliteSettings(path=store_dir / "readings.sqlite3"), 30.0)
    sink = RecordingSink(store)
    source = CountingSource()
    ingestor = Ingestor(source, decoder, sink, batch_max=batch)  # type: ignore[arg-type]
    counting = CountingLog()
    ingestor._rejects = RejectLogger(counting, per_minute=1 << 62)
    report = Report()
    keys: set[tuple[str, int]] = set()
    hang_s = hang_ms / 1000.0
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        if store is not None:
            await stack.enter_async_context(store)
        if watchdog_file is not None:
            stack.enter_context(Watchdog(decoder, 10.0, watchdog_file))
        done = 0
        next_progress = 20_000
        while done < payloads:
            n = min(batch, payloads - done)
            samples = [next(fuzzer) for _ in range(n)]
            received_at = time.time()
            messages = [RawMessage(s.topic, s.payload, 1, False, received_at) for s in samples]
            decoder.outcomes.clear()
            rejected_before = sum(ingestor.stats.rejected.values())
            faulthandler.dump_traceback_later(120, exit=True)
            await ingestor.process(messages)
            faulthandler.cancel_dump_traceback_later()
            _check_batch(report, oracle, decoder, sink, samples, messages, received_at, keys,
                         hang_s)
            report.counted += sum(ingestor.stats.rejected.values()) - rejected_before
            done += n
            if progress and done >= next_progress:
                common.log(f"{done:,} payloads, {report.crashes} crashes, {report.hangs} hangs, "
                           f"{report.violations} violations")
                next_progress += 20_000
    report.seconds = time.perf_counter() - started
    report.payloads = payloads
    report.by_reason = dict(sorted(ingestor.stats.rejected.items()))
    report.logged = sum(v for k, v in counting.lines.items() if k in R._value2member_map_)
    report.acked = source.acked
    report.distinct_keys = len(keys)
    if report.counted != report.rejected or report.logged != report.rejected:
        report.violations += 1
        report.finding_kinds["accounting: rejected / counted / logged differ"] = 1
    if store is not None and store_dir is not None:
        conn = sqlite3.connect(store_dir / "readings.sqlite3")
        try:
            report.store_deadletters = dict(conn.execute(
                "SELECT reason, count(*) FROM deadletter GROUP BY reason ORDER BY reason"))
            report.store_readings = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        finally:
            conn.close()
        if report.store_deadletters != report.by_reason:
            report.violations += 1
            report.finding_kinds["store: dead-letter rows per reason differ from the counters"] = 1
        if report.store_readings != len(keys):
            report.violations += 1
            report.finding_kinds["store: readings rows differ from distinct accepted keys"] = 1
    return report


def _check_batch(report: Report, oracle: Oracle, decoder: TimedDecoder, sink: RecordingSink,
                 samples: list[Sample], messages: list[RawMessage], received_at: float,
                 keys: set[tuple[str, int]], hang_s: float) -> None:
    outcomes = decoder.outcomes
    if len(outcomes) != len(samples):
        report.violations += 1
        report.finding_kinds["ingest: not every message was decoded once"] = 1
        return
    dead = iter(sink.dead)
    readings = iter(sink.readings)
    unstored = sum(1 for _, outcome in outcomes if _unstored(outcome))
    if len(sink.dead) + len(sink.readings) + unstored != len(samples):
        report.violations += 1
        report.finding_kinds["ingest: readings + dead letters != messages"] = 1
    for sample, msg, (elapsed, outcome) in zip(samples, messages, outcomes, strict=True):
        report.decode_seconds += elapsed
        mode = report.by_mode.setdefault(sample.mode, {"payloads": 0, "accepted": 0,
                                                       "rejected": 0})
        case = report.by_case.setdefault(sample.case, {"payloads": 0, "accepted": 0,
                                                       "rejected": 0})
        mode["payloads"] += 1
        case["payloads"] += 1
        if elapsed > hang_s:
            again = min(_timed(decoder.decoder, msg) for _ in range(3))
            if again > hang_s:
                report.hangs += 1
                _record(report, "hang", f"> {hang_s * 1000:g} ms", sample,
                        f"decode took {again * 1000:.1f} ms")
            else:
                report.slow_retimed += 1
            elapsed = again
        if elapsed * 1000 > report.max_decode_ms:
            report.max_decode_ms = elapsed * 1000
            report.slowest = {"ms": round(elapsed * 1000, 3), "mode": sample.mode,
                              "case": sample.case, "size": len(sample.payload)}
        if _unstored(outcome):
            report.unstored += 1
            continue
        if isinstance(outcome, Reading):
            report.accepted += 1
            mode["accepted"] += 1
            case["accepted"] += 1
            stored = next(readings, None)
            # An untimed reading reaches the store with the time sentinel.stamps gave it.
            if stored is None or (stored is not outcome and (
                    outcome.timed or stored.device_id != outcome.device_id
                    or stored.values != outcome.values)):
                _record(report, "ingest", "accepted reading not handed to the store", sample, "")
                stored = outcome
            refused = sink.refused.get(id(stored))
            if refused is not None:
                _record(report, "violation", "the store refused an accepted reading "
                        "(the daemon would retry the batch for ever)", sample,
                        f"{refused}; values {outcome.values!r}"[:500])
            else:
                keys.add((stored.device_id, stored.ts_ms))
        else:
            report.rejected += 1
            mode["rejected"] += 1
            case["rejected"] += 1
            letter = next(dead, None)
            if not isinstance(outcome, DecodeError):
                report.crashes += 1
                tb = "".join(traceback.format_exception(outcome)[-3:])
                where = traceback.extract_tb(outcome.__traceback__)[-1]
                _record(report, "crash", f"{type(outcome).__name__} at "
                        f"{Path(where.filename).name}:{where.lineno}", sample,
                        f"{type(outcome).__name__}: {outcome}\n{tb}")
                want = R.DECODER_ERROR
            else:
                want = outcome.reason
            if letter is None or letter.reason is not want or letter.payload is not msg.payload \
                    or letter.topic != msg.topic:
                _record(report, "ingest", "rejection without its dead letter", sample, "")
            else:
                report.dead_letters += 1
        for category, detail in oracle.check(sample, received_at, outcome):
            _record(report, "violation", category, sample, detail)


def _unstored(outcome: object) -> bool:
    """Acknowledged without a reading or a dead letter (an excluded topic, NoValue)."""
    return isinstance(outcome, NoValue) or outcome == []


def _timed(decoder: Decoder, msg: RawMessage) -> float:
    started = time.perf_counter()
    with contextlib.suppress(Exception):
        decoder.decode(msg)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def summary_lines(report: Report, args: argparse.Namespace) -> list[str]:
    rate = report.payloads / report.seconds if report.seconds else 0.0
    mean_us = report.decode_seconds / max(1, report.payloads) * 1e6
    out = [
        f"fuzz: seed {args.seed}, {report.payloads:,} payloads in {report.seconds:.1f} s "
        f"({rate:,.0f} payloads/s end to end, generation{'' if args.no_store else ' and store'}"
        " included; "
        f"decode {mean_us:.1f} µs/payload mean, slowest {report.max_decode_ms:.2f} ms)",
        "",
        f"  {'crashes':<34}{report.crashes:>10,}",
        f"  {f'hangs (> {args.hang_ms:g} ms)':<34}{report.hangs:>10,}"
        + (f"   ({report.slow_retimed} slow once, fast when re-timed)"
           if report.slow_retimed else ""),
        f"  {'oracle / accounting violations':<34}{report.violations:>10,}",
        f"  {'accepted (readings)':<34}{report.accepted:>10,}",
        f"  {'rejected':<34}{report.rejected:>10,}",
        f"  {'  dead-lettered (same reason)':<34}{report.dead_letters:>10,}",
        f"  {'  counted (IngestStats.rejected)':<34}{report.counted:>10,}",
        f"  {'  logged (message_rejected)':<34}{report.logged:>10,}",
    ]
    if report.store_deadletters is not None:
        out.append(f"  {'  rows in the store deadletter':<34}"
                   f"{sum(report.store_deadletters.values()):>10,}")
        out.append(f"  {'readings rows (distinct keys)':<34}{report.store_readings:>10,}"
                   f"   ({report.distinct_keys:,} distinct device/time keys accepted)")
    out += ["", f"  {'rejections by reason':<34}{'count':>10}  {'share':>6}"]
    for reason, n in sorted(report.by_reason.items(), key=lambda kv: -kv[1]):
        out.append(f"  {reason:<34}{n:>10,}  {n / max(1, report.payloads):>6.1%}")
    out += ["", f"  {'by mode':<34}{'payloads':>10}{'accepted':>10}{'rejected':>10}"]
    for name, row in report.by_mode.items():
        out.append(f"  {name:<34}{row['payloads']:>10,}{row['accepted']:>10,}"
                   f"{row['rejected']:>10,}")
    out += ["", f"  {'by profile/kind':<34}{'payloads':>10}{'accepted':>10}{'rejected':>10}"]
    for name, row in sorted(report.by_case.items()):
        out.append(f"  {name:<34}{row['payloads']:>10,}{row['accepted']:>10,}"
                   f"{row['rejected']:>10,}")
    if report.finding_kinds:
        out += ["", "  findings:"]
        for key, n in sorted(report.finding_kinds.items(), key=lambda kv: -kv[1]):
            out.append(f"    {n:>7,}  {key}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payloads", type=int, default=200_000,
                        help="messages to generate (default 200,000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--hang-ms", type=float, default=50.0,
                        help="one decode slower than this is a hang (default 50)")
    parser.add_argument("--batch", type=int, default=500,
                        help="messages per Ingestor.process() batch (default 500, batch_max)")
    parser.add_argument("--no-store", action="store_true",
                        help="do not write to a real SQLite store (faster)")
    parser.add_argument("--no-lab", action="store_true",
                        help="only the shipped profiles, not the lab profiles")
    parser.add_argument("--json", help="where to write the JSON report "
                                       "(default bench/results/fuzz-<time>.json)")
    args = parser.parse_args()
    results = common.ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.json) if args.json else results / f"fuzz-{stamp}.json"
    _quiet_structlog()  # the ingest stage's own log lines (only decoder defects) are noise
    with tempfile.TemporaryDirectory(prefix="sentinel-fuzz-") as tmp:
        world = load_world(None if args.no_lab else Path(tmp) / "lab")
        cases = build_cases(world)
        common.log(f"{len(cases)} profile/kind cases: {', '.join(c.name for c in cases)}")
        gc.freeze()  # start-up objects out of the collector's way: fewer long GC passes
        report = asyncio.run(run_fuzz(
            world, args.payloads, args.seed, store_dir=None if args.no_store else Path(tmp),
            hang_ms=args.hang_ms, batch=args.batch, progress=True, cases=cases,
            watchdog_file=results / f"fuzz-hang-{stamp}.json"))
    lines = summary_lines(report, args)
    print("\n".join(lines))
    doc = {
        "benchmark": "fuzz", "time": stamp, "seed": args.seed, "ok": report.ok,
        "options": {k: v for k, v in vars(args).items() if k != "json"},
        "cases": [c.name for c in cases],
        "figures": {
            "payloads": report.payloads, "seconds": round(report.seconds, 3),
            "payloads_per_s": round(report.payloads / report.seconds, 1),
            "decode_us_mean": round(report.decode_seconds / max(1, report.payloads) * 1e6, 3),
            "decode_ms_max": round(report.max_decode_ms, 3), "slowest": report.slowest,
            "crashes": report.crashes, "hangs": report.hangs,
            "slow_retimed": report.slow_retimed, "violations": report.violations,
            "accepted": report.accepted, "rejected": report.rejected,
            "dead_lettered": report.dead_letters, "counted": report.counted,
            "logged": report.logged, "acked": report.acked,
            "store_deadletters": report.store_deadletters,
            "store_readings": report.store_readings, "distinct_keys": report.distinct_keys,
        },
        "rejections_by_reason": report.by_reason,
        "by_mode": report.by_mode, "by_case": report.by_case,
        "finding_kinds": report.finding_kinds, "findings": report.findings,
    }
    common.write_json(str(out), doc)
    common.log(f"report written to {out}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
