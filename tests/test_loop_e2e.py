"""The closed loop end to end: a running daemon, a real broker, the alarm's notification
delivered through apprise to a local receiver, and its one-tap link worked in Chromium:
我去处理 → a note with a photo → closed with an outcome. Then `sentinel report response`
shows that person's times, and its HTML report renders in Chromium with its charts.

One daemon and one browser for the module. Screenshots go to test-artifacts/
($SENTINEL_TEST_ARTIFACTS). Nothing is skipped: a missing broker or browser fails.
"""

from __future__ import annotations

import json
import re
import struct
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from browser import artifact_dir, chromium, console_errors
from daemon import LOADED, DaemonProcess, Publisher, write_oncall
from helpers import sentinel
from receivers import HttpReceiver
from servers import Mosquitto
from test_escalation_e2e import (
    alarm,
    link_in,
    message,
    open_incident,
    smoke_detector,
    write_policies,
)

T = TypeVar("T")


def png(width: int = 24, height: int = 16) -> bytes:
    """A real (tiny, red) PNG, made here: the phone photo of the test."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    rows = b"".join(b"\x00" + b"\xdc\x26\x26" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                               8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


class Loop:
    """The module's daemon, receiver and browser."""

    def __init__(self, daemon: DaemonProcess, hooks: HttpReceiver, driver: WebDriver,
                 workdir: Path) -> None:
        self.daemon, self.hooks, self.driver, self.workdir = daemon, hooks, driver, workdir

    def api(self, path: str) -> Any:
        token = (self.daemon.state_dir / "control.token").read_text().strip()
        request = urllib.request.Request(f"http://127.0.0.1:{self.daemon.control_port}{path}",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read()) if response.headers.get_content_type() \
                == "application/json" else response.read()


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """A broker, a daemon whose grid workers are paged at once to a local webhook, and
    one Chromium, for the module."""
    workdir = tmp_path_factory.mktemp("loop")
    with Mosquitto(workdir / "mosquitto") as broker, HttpReceiver() as hooks, \
            chromium(1280, 900) as driver:
        channels = {c.id: [hooks.url("json", f"/{c.id}")] for c in LOADED.oncall.contact}
        oncall = write_oncall(workdir / "oncall.yaml", channels)
        policies = write_policies(workdir / "policies.toml", [(0, ["grid_worker"])])
        daemon = DaemonProcess(workdir / "state", broker.port, oncall=oncall,
                               escalation__policies=str(policies), rules__startup_grace="0",
                               rules__tick_interval="0.2", escalation__tick_interval="0.2")
        try:
            daemon.start()
            yield Loop(daemon, hooks, driver, workdir)
        finally:
            daemon.close()


def wait(driver: WebDriver, predicate: Callable[[WebDriver], T], what: str) -> T:
    try:
        result: T = WebDriverWait(driver, 15).until(predicate)
        return result
    except Exception:
        driver.save_screenshot(str(artifact_dir() / "loop-timeout.png"))
        raise AssertionError(f"timed out waiting for {what}") from None


def submit(driver: WebDriver, action: str) -> None:
    """Press the button of the form with this action; wait for the next page."""
    old = driver.find_element(By.TAG_NAME, "html")
    form = driver.find_element(By.CSS_SELECTOR, f'form input[name=action][value="{action}"]'
                               ).find_element(By.XPATH, "..")
    form.find_element(By.TAG_NAME, "button").click()
    wait(driver, lambda d: old != d.find_element(By.TAG_NAME, "html") and
         d.execute_script("return document.readyState") == "complete", f"{action} page")


def test_alarm_link_take_note_resolve_then_the_report(loop: Loop) -> None:
    """Alarm → the grid worker's link → 我去处理 → note with a photo → closed as handled,
    all under the worker's contact id; the report shows the worker's times; its HTML
    report draws its charts in Chromium."""
    driver, smoke = loop.driver, smoke_detector()
    started = time.time()
    pub = Publisher(int(loop.daemon.env["SENTINEL_MQTT__PORT"]))
    alarm(pub, smoke, started)
    pub.close()
    inc = open_incident(loop.daemon.state_dir / "incidents.sqlite3", smoke)

    # The page reached the grid worker through apprise; its link is the credential.
    [first] = loop.hooks.wait_for(1, 15)
    worker = first.path.strip("/")
    name = next(c.name for c in LOADED.oncall.contact if c.id == worker)
    link = link_in(message(first)[1])

    driver.get(link)
    assert ">我去处理</button>" in driver.page_source and inc.id in driver.page_source
    submit(driver, "take")
    assert "已确认, 由你处理" in driver.page_source
    assert f"{name}, 此事件由你处理" in driver.page_source

    photo = loop.workdir / "site.png"
    photo.write_bytes(png())
    driver.find_element(By.NAME, "text").send_keys("已到场: 厨房油烟触发, 无明火")
    driver.find_element(By.NAME, "photo").send_keys(str(photo))
    submit(driver, "note")
    assert "反馈已记录" in driver.page_source and "[附照片]" in driver.page_source
    driver.save_screenshot(str(artifact_dir() / "loop-link-noted.png"))

    driver.find_element(By.CSS_SELECTOR, 'input[name=outcome][value="false_alarm"]').click()
    driver.find_element(By.NAME, "note").send_keys("油烟, 已提醒住户")
    submit(driver, "resolve")
    assert "事件已关闭" in driver.page_source and f"关闭人: {name}" in driver.page_source
    assert console_errors(driver) == [], "the page's script ran within its CSP"

    # The timeline: every step under the worker's contact id, the photo served by the API.
    shown = loop.api(f"/api/incidents/{inc.id}")
    steps = [(e["type"], e["actor"]) for e in shown["events"]
             if e["type"] in ("acknowledged", "assigned", "noted", "resolved")]
    assert steps == [("acknowledged", worker), ("assigned", worker), ("noted", worker),
                     ("resolved", worker)]
    noted = next(e for e in shown["events"] if e["type"] == "noted")
    assert loop.api(f"/api/incidents/{inc.id}/photo/{noted['data']['photo']}") == png()
    closed = shown["incident"]
    assert closed["outcome"] == "false_alarm" and closed["assigned_to"] == worker

    # The report: that person's times, as the daemon recorded them.
    result = sentinel("report", "response", "--since", "1h", "--json", env=loop.daemon.env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    row = next(r for r in report["rows"] if r["key"] == worker)
    assert (row["name"], row["incidents"], row["acknowledged"], row["noted"],
            row["resolved"], row["false_alarms"]) == (name, 1, 1, 1, 1, 1)
    opened = closed["opened_at"]
    for span, at in (("ack", closed["acknowledged_at"]), ("arrival", closed["first_note_at"]),
                     ("resolve", closed["resolved_at"])):
        assert row[span]["count"] == 1 and row[span]["max"] == pytest.approx(at - opened,
                                                                             abs=0.002)
    assert 0 < row["ack"]["max"] <= row["arrival"]["max"] <= row["resolve"]["max"] < 120
    assert report["devices"][0]["device"] == smoke.id

    page = loop.workdir / "response.html"
    result = sentinel("report", "response", "--since", "1h", "--html", str(page),
                      env=loop.daemon.env)
    assert result.returncode == 0 and "报告已写入" in result.stderr
    driver.get(page.as_uri())
    wait(driver, lambda d: d.find_elements(By.TAG_NAME, "svg"), "the report's charts")
    charts = driver.find_elements(By.TAG_NAME, "svg")
    assert len(charts) == 4, "ack, arrival, resolve and false alarms per device"
    bars = driver.find_elements(By.CSS_SELECTOR, "svg rect")
    assert bars and all(b.size["width"] > 0 and b.size["height"] > 0 for b in bars)
    assert name in driver.find_element(By.TAG_NAME, "table").text
    assert re.search(r"处置响应报告", driver.title)
    driver.save_screenshot(str(artifact_dir() / "loop-report.png"))


def test_an_assignment_from_the_dispatch_room_reaches_the_person_with_their_link(
        loop: Loop) -> None:
    """The dispatch room assigns an alarm to a duty officer who was not paged: the officer
    gets a notice "指派给你" with a link of their own, whose page offers notes and closing."""
    driver, smoke = loop.driver, smoke_detector(1)
    pub = Publisher(int(loop.daemon.env["SENTINEL_MQTT__PORT"]))
    alarm(pub, smoke, time.time())
    pub.close()
    inc = open_incident(loop.daemon.state_dir / "incidents.sqlite3", smoke)
    officer = next(c for c in LOADED.oncall.contact if c.role.value == "duty_officer")
    already = len(loop.hooks.requests)
    result = sentinel("assign", inc.id, officer.id, env=loop.daemon.env)
    assert result.returncode == 0, result.stderr

    def told() -> list[Any]:
        return [r for r in loop.hooks.requests[already:] if r.path == f"/{officer.id}"]

    deadline = time.monotonic() + 15
    while not told() and time.monotonic() < deadline:
        time.sleep(0.05)
    [notice] = told()
    title, text = message(notice)
    assert title.startswith("【严重】指派给你: 烟感报警"), title
    assert "此事件已指派给你处理" in text and inc.id in text
    driver.get(link_in(text))
    assert f"{officer.name}, 此事件由你处理" in driver.page_source
    assert driver.find_elements(By.NAME, "text"), "the assigned person can add a note"
    assert driver.find_elements(By.CSS_SELECTOR, 'input[name=outcome]'), "and close it"
