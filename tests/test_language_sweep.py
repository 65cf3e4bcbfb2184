"""One language at a time: every CLI command, the notifications, the board and a link page,
in Chinese mode against a running daemon, show no internal English word, raw JSON or epoch
time to a person.

Table-driven: a command is one line of `CASES` (run in order against one shared story: a
confirmed fire with its members, gas, a fall, SOS, dead letters, acknowledgements, a
resolution that closes the fire's members with it). `sentinel --help`'s commands must all be
in the table or in `NOT_SWEPT` with the reason, so a new command cannot be forgotten.

What counts as text: everything printed, less URLs, file paths, incident ids, the
inventory's ids and the on-call file's contact ids (ids are not words). What fails: a word
of the model's vocabulary (statuses, outcomes, severities, event types, kinds, incident and
rule names, roles, reject reasons, notice kinds, place keys — collected from the code, not
typed here), any lower-case snake_case identifier, a JSON object, a 10- or 13-digit epoch
time. The scan cannot be trivially true: each case must show enough Chinese text, and the
same scan run on English output must find words.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import typing
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.cli import build_parser
from sentinel.control.client import ControlClient
from sentinel.decode.encode import encode
from sentinel.escalation.engine import NoticeKind
from sentinel.escalation.model import Role
from sentinel.i18n import _MESSAGES
from sentinel.incidents.model import Outcome, Status
from sentinel.types import RejectReason, Severity

from daemon import LOADED, TYPICAL, DaemonProcess, wait_until, write_oncall
from helpers import ROOT, SHIPPED_CONFIG
from receivers import HttpReceiver
from servers import Mosquitto

DATA = Path(__file__).resolve().parent / "data"
Z2M_DEVICES = (DATA / "z2m_bridge_devices.json").read_bytes()
HA_MESSAGES: list[tuple[str, bytes]] = [
    (m["topic"], m["payload"].encode() if isinstance(m["payload"], str)
     else json.dumps(m["payload"], ensure_ascii=False).encode())
    for m in json.loads((DATA / "ha_discovery.json").read_text(encoding="utf-8"))["messages"]]


# -- the scan --------------------------------------------------------------------------

def internal_words() -> frozenset[str]:
    """The model's vocabulary, collected from the code (new values are covered unseen)."""
    words = {s.value for s in Status} | {o.value for o in Outcome}
    words |= {s.label for s in Severity} | {r.value for r in Role}
    words |= {r.value for r in RejectReason} | set(typing.get_args(NoticeKind))
    words |= {k.split(".", 1)[1] for k in _MESSAGES if k.startswith("event.")}
    words |= {"member_added", "acknowledgement_expired", "assigned", "noted", "attempt"}
    words |= set(LOADED.kinds.names())
    words |= {r.name for r in LOADED.rules.rule} | {r.incident_name for r in LOADED.rules.rule}
    words |= {c.name for c in LOADED.rules.correlation}
    words |= {"grid", "compound", "building", "community", "device", "location", "operator",
              "silence", "drill", "silenced", "open", "closed", "none", "null", "true",
              "false", "group", "system"}
    return frozenset(words)


FORBIDDEN = internal_words()
IDS = sorted({v for d in LOADED.inventory.values()
              for v in (d.id, d.compound, d.building, d.grid, d.community) if v}
             | {c.id for c in LOADED.oncall.contact}, key=len, reverse=True)
_NOT_TEXT = re.compile(r"https?://\S+|(?<![\w.])/[\w./-]+|\b\d{8}-\d{4}\b")
_ID = re.compile("|".join(re.escape(i) for i in IDS))
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EPOCH = re.compile(r"(?<![\d.])1\d{9}(?:\d{3})?(?:\.\d+)?(?![\d])")
_JSON = re.compile(r"[{\[]\s*\"|\"\w+\"\s*:")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def leaks(text: str, data_words: frozenset[str] = frozenset()) -> list[str]:
    """What in `text` a person should not see in Chinese mode (empty: nothing)."""
    found = [f"raw JSON {m.group(0)!r}" for m in _JSON.finditer(text)]
    found += [f"epoch time {m.group(0)}" for m in _EPOCH.finditer(text)]
    words = _ID.sub(" ", _NOT_TEXT.sub(" ", text))
    for m in _WORD.finditer(words):
        word = m.group(0)
        if word in data_words:
            continue
        if word in FORBIDDEN or ("_" in word.strip("_") and word.islower()):
            line = next((line for line in text.splitlines() if word in line), word)
            found.append(f"internal word {word!r} in: {line.strip()[:160]}")
    return found


def chinese(text: str) -> int:
    return len(_CJK.findall(text))


def visible_text(page: str) -> str:
    """The text of an HTML page a person sees (no scripts, styles, tags or attributes)."""
    page = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", page)
    return html.unescape(re.sub(r"(?s)<[^>]+>", " ", page))


# -- the table -------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One command as a person runs it; `{name}` in args is filled from the story."""

    command: str                      # the command's path in `sentinel --help`
    args: tuple[str, ...] = ()
    min_chinese: int = 8              # Chinese characters it must show, at least
    expect: str = ""                  # a text it must show (proves it did the thing)
    capture: str = ""                 # story key := first `#N` it prints
    stdout_only_data: bool = False    # stdout is data for a file (CSV): scan stderr
    data: bytes = b""                 # input quoted back (vendor words are not ours)
    code: int = 0
    changes: bool = False             # changes the story: runs alone, in its place


CASES: tuple[Case, ...] = (
    Case("check", expect="配置有效"),
    Case("status", expect="设备: 共 1005 台", code=0),
    Case("oncall", expect="网格员"),
    Case("oncall", ("--all",), expect="不在班"),
    # The board's order: the confirmed fire first, its smoke alarms folded under it.
    Case("incidents list", expect="组内报警 2 起"),
    Case("incidents show", ("{fire}",), expect="经过"),
    Case("incidents show", ("{member}",), expect="归入"),
    Case("tail", min_chinese=20, expect="报警中"),
    Case("tail", ("--after", "0", "--readings"), min_chinese=40, expect="已通知"),
    Case("history", ("{smoke}", "--since", "1h"), min_chinese=2, expect="报警"),
    Case("deadletter list", min_chinese=10, expect="JSON 格式错误"),
    Case("ack", ("{gas}", "--actor", "{person}", "--note", "已到场"), expect="已确认事件",
         changes=True),
    Case("assign", ("{gas}", "{person}", "--actor", "{person}"), expect="指派给",
         changes=True),
    Case("note", ("{gas}", "阀门已关闭, 已开窗通风", "--actor", "{person}"),
         expect="添加反馈", changes=True),
    Case("incidents show", ("{gas}",), expect="阀门已关闭"),
    Case("resolve", ("{fire}", "--outcome", "handled", "--actor", "{person}"),
         expect="已关闭事件", changes=True),
    Case("resolve", ("{sos}", "--outcome", "false_alarm", "--actor", "{person}"),
         expect="误报", changes=True),
    Case("incidents show", ("{member}",), expect="随所属事件一并关闭"),
    Case("incidents list", ("--all",), expect="已关闭"),
    Case("report latency", ("--since", "1h"), expect="报警时延"),
    Case("report response", ("--since", "1h"), expect="确认用时"),
    Case("report response", ("--since", "1h", "--by", "kind"), expect="燃气"),
    # Rules raising the same incident are told apart by their ids from the rules file
    # (the administrator's own names, like device ids): data, not internal words.
    Case("backtest", ("--jobs", "1"), min_chinese=10, expect="规则回测",
         data=b"fall fall_still gas_alarm gas_lel heart_rate_low heart_rate_high "
              b"battery_low battery_low_signal smoke_fault device_fault"),
    Case("silence add", ("--grid", "{grid}", "--kind", "water_level", "--every", "mon-fri",
                         "--from", "09:00", "--to", "11:00", "--author", "{person}",
                         "--reason", "消火栓冲洗"), capture="silence", expect="已添加屏蔽",
         changes=True),
    Case("silence list", expect="周一"),
    Case("silence remove", ("{silence}", "--author", "{person}"), min_chinese=2,
         expect="已移除", changes=True),
    Case("drill add", ("--building", "{building}", "--for", "1h", "--author", "{person}",
                       "--reason", "消防演练"), capture="drill", expect="已添加演练", changes=True),
    Case("drill list", min_chinese=4, expect="楼栋"),
    Case("drill remove", ("{drill}", "--author", "{person}"), min_chinese=2, expect="已移除",
         changes=True),
    Case("board", ("--name", "值班员"), expect="看板"),
    Case("board", ("--person", "{person}"), expect="个人看板"),
    Case("board", ("--viewer",), expect="只读"),
    Case("simulate", ("--port", "{port}", "--duration", "0.5", "--quiet"), min_chinese=4,
         expect="完成"),
    Case("devices import zigbee2mqtt", ("--broker", "mqtt://127.0.0.1:{port}"),
         min_chinese=20, stdout_only_data=True, data=Z2M_DEVICES, expect="猜测为"),
    Case("devices import homeassistant", ("--broker", "mqtt://127.0.0.1:{port}"),
         min_chinese=20, stdout_only_data=True,
         data=b" ".join(p + t.encode() for t, p in HA_MESSAGES), expect="猜测为"),
)

# Commands of `sentinel --help` the sweep does not run, with the reason.
# SWEEP_SHOW=1 (with pytest -s) prints what each command showed.
SHOW = bool(os.environ.get("SWEEP_SHOW"))
NOT_SWEPT = {
    "run": "the daemon itself: its output is the structured log, for administrators "
           "(the sweep runs against it)",
    "demo": "starts its own broker and daemon for minutes; tests/test_demo.py runs it",
    "district": "the district daemon: like `run`, its output is the structured log "
                "(tests/test_district_daemon.py runs it)",
}


def leaf_commands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """Every runnable command path of the parser ("incidents show", "status"...)."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= leaf_commands(sub, f"{prefix}{name} ")
    return found or {prefix.strip()}


# -- the story -------------------------------------------------------------------------

@dataclass
class Story:
    daemon: DaemonProcess
    broker: Mosquitto
    inbox: HttpReceiver
    values: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sentinel", *args, "-c",
                               str(SHIPPED_CONFIG)], capture_output=True, text=True,
                              env=self.env, timeout=60, cwd=ROOT)

    @property
    def env(self) -> dict[str, str]:
        return {**self.daemon.env, "SENTINEL_LANG": "zh"}

    def client(self) -> ControlClient:
        return ControlClient(socket_path=self.daemon.state_dir / "control.sock")


def _building_with_smoke() -> tuple[str, str, list[str]]:
    by_building: dict[tuple[str, str], list[str]] = {}
    for d in LOADED.inventory.values():
        if d.kind == "smoke" and d.building:
            by_building.setdefault((d.compound, d.building), []).append(d.id)
    (compound, building), ids = next((k, v) for k, v in sorted(by_building.items())
                                     if len(v) >= 2)
    return compound, building, sorted(ids)


def _publish(port: int, messages: list[tuple[str, bytes]], retain: bool = False) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sweep-{time.monotonic_ns()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """A daemon that has seen a confirmed fire, gas, a fall, SOS and two dead letters."""
    base = tmp_path_factory.mktemp("sweep")
    with Mosquitto(base / "mosquitto") as broker, HttpReceiver() as inbox:
        oncall = write_oncall(base / "oncall.yaml", default=[inbox.url("json", "/n")],
                              languages={c.id: "zh" for c in LOADED.oncall.contact})
        daemon = DaemonProcess(base / "state", broker.port, oncall=oncall).start()
        try:
            _, building, smokes = _building_with_smoke()
            gas = next(d for d in LOADED.inventory.values() if d.kind == "gas")
            watches = [d for d in LOADED.inventory.values() if d.kind == "elderly_watch"]
            person = LOADED.oncall.contact[0]
            story = Story(daemon, broker, inbox, {
                "port": str(broker.port), "smoke": smokes[0], "grid": gas.grid,
                "building": building, "person": person.id})
            injects = [f"smoke-alarm:{s}@0" for s in smokes[:2]]
            injects += [f"gas-leak:{gas.id}@0", f"sos:{watches[0].id}@0",
                        f"fall:{watches[1].id}@0"]
            args = ["simulate", "--port", str(broker.port), "--duration", "1", "--quiet"]
            result = story.run(*args, *(a for i in injects for a in ("--inject", i)))
            assert result.returncode == 0, result.stderr
            _publish(broker.port, [
                (f"sentinel/v1/{smokes[0]}/telemetry", b"{not json"),
                *encode(LOADED.profiles[gas.profile], gas,
                        {**TYPICAL["gas"], "concentration_lel": 150.0}, time.time(),
                        LOADED.kinds)])
            _publish(broker.port, [("zigbee2mqtt/bridge/devices", Z2M_DEVICES)], retain=True)
            _publish(broker.port, HA_MESSAGES, retain=True)

            def settled() -> bool:
                incidents = story.client().incidents()["incidents"]
                names = {i["name"]: i for i in incidents}
                return {"fire_confirmed", "gas_leak", "sos", "fall"} <= set(names) and \
                    len(inbox.requests) >= 3
            assert wait_until(settled, 20), story.client().incidents()
            incidents = story.client().incidents()["incidents"]
            fire = next(i for i in incidents if i["name"] == "fire_confirmed")
            story.values.update(
                fire=fire["id"], member=fire["members"][0],
                gas=next(i["id"] for i in incidents if i["name"] == "gas_leak"),
                sos=next(i["id"] for i in incidents if i["name"] == "sos"),
                fall=next(i["id"] for i in incidents if i["name"] == "fall"))
            yield story
        finally:
            daemon.close()


# -- running one case ------------------------------------------------------------------

def _follow(story: Story, args: list[str], until: re.Pattern[str],
            publish_reading: bool) -> str:
    """`sentinel tail ...` until a line matches `until`; then SIGTERM, as Ctrl-C would."""
    proc = subprocess.Popen([sys.executable, "-m", "sentinel", "tail", *args, "-c",
                             str(SHIPPED_CONFIG)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=story.env, cwd=ROOT)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 20
    published = False
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            seen.append(line)
            if publish_reading and not published and "——" in line:
                smoke = LOADED.inventory[story.values["smoke"]]
                _publish(story.broker.port, encode(
                    LOADED.profiles[smoke.profile], smoke, TYPICAL["smoke"], time.time(),
                    LOADED.kinds))
                published = True
            if until.search(line):
                break
    finally:
        proc.terminate()
        proc.wait(10)
    return "".join(seen)


def _run_case(story: Story, case: Case) -> tuple[str, str]:
    """(what a person sees, what of it is scanned)."""
    args = [a.format(**story.values) for a in case.args]
    if case.command == "tail":
        replay = "--after" in args
        # Live readings are marked " · "; the live header is "——".
        until = re.compile(r" · " if replay else r"——")
        out = _follow(story, args, until, publish_reading=replay)
        return out, out
    result = story.run(*case.command.split(), *args)
    assert result.returncode == case.code, (case, result.stdout, result.stderr)
    shown = result.stdout + result.stderr
    if case.capture:
        found = re.search(r"#(\d+)", shown)
        assert found, shown
        story.values[case.capture] = found.group(1)
    return shown, (result.stderr if case.stdout_only_data else shown)


def _run_in_order(story: Story, cases: tuple[Case, ...]
                  ) -> Iterator[tuple[Case, tuple[str, str]]]:
    """Each case's output, in table order. Cases that only read run two at a time (each
    is a CLI process that spends most of its time loading the configuration); a case that
    changes the story waits for those before it and runs alone."""
    with ThreadPoolExecutor(2) as pool:
        batch: list[Case] = []
        for case in (*cases, None):
            if case is not None and not case.changes:
                batch.append(case)
                continue
            yield from zip(batch, pool.map(lambda c: _run_case(story, c), batch),
                           strict=True)
            batch = []
            if case is not None:
                yield case, _run_case(story, case)


def _data_words(case: Case) -> frozenset[str]:
    return frozenset(_WORD.findall(case.data.decode("utf-8", "replace")))


def test_every_command_is_in_the_table() -> None:
    """A command of `sentinel --help` is swept or excluded with a reason, never forgotten."""
    commands = leaf_commands(build_parser())
    swept = {case.command for case in CASES}
    assert commands == swept | set(NOT_SWEPT), (
        f"add a line to CASES for {sorted(commands - swept - set(NOT_SWEPT))}; "
        f"gone: {sorted((swept | set(NOT_SWEPT)) - commands)}")


def test_the_scan_finds_what_it_is_for() -> None:
    """The scan is not blind: it finds internal words, JSON and epoch times, and no id."""
    assert {"firing", "acknowledged", "with_group", "grid", "compound", "opened",
            "notification_sent", "false_alarm", "smoke_alarm"} <= FORBIDDEN
    assert leaks("20240501-0007 | 严重 | firing | 烟感报警")
    assert leaks("10:00:01 #5 [严重] 已关闭 (with_group)")
    assert leaks('{"id": "20240501-0007"}') and leaks("发生 1767225600.5")
    assert leaks("值班 grid SB-G01") and leaks("报警 tank_level_falling")
    device = next(iter(LOADED.inventory.values()))
    assert not leaks(f"设备 {device.id} http://127.0.0.1:8080/a/x_y.z 20240501-0007 "
                     f"{device.grid} /var/lib/sentinel/control.sock")


def test_every_command_in_chinese_shows_no_internal_word(story: Story) -> None:
    """Each line of the table, in order: exit code, enough Chinese, its expected text, and
    no internal English word, raw JSON or epoch time in what it prints."""
    problems: list[str] = []
    for case, (shown, scanned) in _run_in_order(story, CASES):
        label = f"sentinel {case.command} {' '.join(case.args)}"
        if chinese(scanned) < case.min_chinese:
            problems.append(f"{label}: only {chinese(scanned)} Chinese characters:\n{shown}")
        if case.expect and case.expect not in shown:
            problems.append(f"{label}: {case.expect!r} not shown:\n{shown}")
        problems += [f"{label}: {leak}" for leak in leaks(scanned, _data_words(case))]
        if SHOW:
            print(f"\n$ {label}\n{shown}")
    assert not problems, "\n".join(problems)


def test_english_output_is_caught(story: Story) -> None:
    """The same scan on `--lang en` output finds words: a pass above is not trivially true."""
    result = story.run("incidents", "list", "--all", "--lang", "en")
    assert result.returncode == 0 and leaks(result.stdout), result.stdout


def test_notifications_board_and_link_page_in_chinese(story: Story) -> None:
    """What the receivers got, the board page (its text and the Chinese texts its script
    shows) and a one-tap link page: Chinese, with nothing internal."""
    problems: list[str] = []
    messages = story.inbox.requests
    assert len(messages) >= 3
    for request in messages:
        body = request.json
        assert isinstance(body, dict)
        text = f"{body['title']}\n{body['message']}"
        assert chinese(text) >= 8, text
        problems += [f"notification: {leak}" for leak in leaks(text)]

    # A link of the fall, which nobody acknowledges in this story (the page shows it open).
    link = next(m.group(0) for r in messages
                if story.values["fall"] in str(r.json["message"])  # type: ignore[index]
                and (m := re.search(r"http://127\.0\.0\.1:\d+/a/[A-Za-z0-9_.=-]+",
                                    str(r.json["message"]))))  # type: ignore[index]
    with urllib.request.urlopen(link, timeout=10) as response:
        page = response.read().decode()
    text = visible_text(page)
    assert chinese(text) >= 10, text
    problems += [f"link page: {leak}" for leak in leaks(text)]

    board = story.run("board", "--name", "值班员")
    login = re.search(r"https?://\S+", board.stdout)
    assert login, board.stdout
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with opener.open(login.group(0), timeout=10) as response:
        page = response.read().decode()
    text = visible_text(page)
    assert chinese(text) >= 10, text
    problems += [f"board page: {leak}" for leak in leaks(text)]
    catalog = re.search(r'(?s)<script id="board-i18n" type="application/json">(.*?)</script>',
                        page)
    assert catalog, "the board's catalogue is not embedded"
    # Placeholders ({count}) are filled by the script, not read by a person.
    texts = re.sub(r"\{\w+\}", " ", "\n".join(
        v for k, v in json.loads(catalog.group(1))["zh"].items() if k != "zone"))
    assert chinese(texts) >= 100
    problems += [f"board catalogue: {leak}" for leak in leaks(texts)]
    assert not problems, "\n".join(problems)
