"""The web board in headless Chromium (Debian's chromium and chromedriver, through Selenium).

Against the real daemon on a real broker: log in with the control token, see a smoke alarm
published over MQTT appear without a reload, acknowledge it with a click, see its state
change (and the daemon record who). Against the in-memory stand-in of the API: the phone
layout, the English switch, resolving, and a board that keeps up while the stream replays.
Screenshots are kept in $SENTINEL_TEST_ARTIFACTS (default test-artifacts/). Never skipped:
a missing browser fails with the command that installs it.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from sentinel.config.inventory import Device
from sentinel.control.board import BoardSessions
from sentinel.decode.encode import encode

from browser import artifact_dir, chromium, console_errors
from daemon import LOADED, DaemonProcess, Publisher, wait_until
from servers import Mosquitto
from test_board import KEY, FakeBoardApi, incident_json

T = TypeVar("T")
SHIPPED_RULES = str(Path(LOADED.config_path).parent / "rules.toml")


def wait_for(driver: WebDriver, predicate: Callable[[WebDriver], T], timeout: float = 15,
             what: str = "") -> T:
    try:
        return WebDriverWait(driver, timeout, ignored_exceptions=(
            StaleElementReferenceException,)).until(predicate)
    except TimeoutException:
        shot = artifact_dir() / f"timeout-{int(time.time())}.png"
        driver.save_screenshot(str(shot))
        raise AssertionError(f"timed out waiting for {what or predicate} (screenshot {shot}); "
                             f"console: {console_errors(driver)}") from None


def card(driver: WebDriver, incident_id: str) -> Any:
    found = driver.find_elements(By.CSS_SELECTOR, f'#incidents li[data-id="{incident_id}"]')
    return found[0] if found else None


def card_status(driver: WebDriver, incident_id: str) -> str | None:
    found = card(driver, incident_id)
    return None if found is None else found.get_attribute("data-status")


def no_page_errors(driver: WebDriver) -> None:
    errors = [e for e in console_errors(driver) if "favicon" not in e]
    assert not errors, f"the page logged errors (script or CSP): {errors}"


# -- the stand-in API in a thread -------------------------------------------------------

class StandIn:
    """FakeBoardApi with the board on a loopback port, served from a thread of its own."""

    def __init__(self) -> None:
        self.sessions = BoardSessions(KEY)
        self.api = FakeBoardApi(self.sessions)
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""

    def __enter__(self) -> StandIn:
        self._thread.start()
        self.url = self.run(self._start)
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` (a plain function or a coroutine function) on the server's loop."""
        async def call() -> Any:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result
        future: Future[Any] = asyncio.run_coroutine_threadsafe(call(), self._loop)
        return future.result(10)

    async def _start(self) -> str:
        self._runner = web.AppRunner(self.api.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


def test_board_on_a_phone_with_english_and_resolve(stand_in: StandIn) -> None:
    """At 390 px: nothing wider than the screen, buttons big enough to tap; a new incident
    appears live; English is remembered across a reload; resolving removes the card."""
    api = stand_in.api
    stand_in.run(lambda: api.open(incident_json("A-1", opened_at=time.time() - 120)))
    with chromium(390, 844, mobile=True) as driver:
        driver.get(stand_in.url + stand_in.sessions.login_path("手机用户"))
        wait_for(driver, lambda d: card(d, "A-1") is not None, what="the first incident")
        wait_for(driver, lambda d: "conn-live" in (d.find_element(By.ID, "conn")
                                                   .get_attribute("class") or ""),
                 what="the live stream")
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
        assert "烟感报警" in card(driver, "A-1").text

        # A gas leak in another compound arrives by the stream: newest first.
        gas_place = {"community": "水贝社区", "compound": "水贝新村", "building": "2栋",
                     "floor": "1", "unit": "101", "grid": "SB-G02",
                     "location": "水贝新村2栋1楼101室厨房", "kind": "gas",
                     "device": "SB-GAS-0001"}
        stand_in.run(lambda: api.open(incident_json("B-2", "gas_leak", place=gas_place)))
        wait_for(driver, lambda d: card(d, "B-2") is not None, what="the live gas leak")
        stand_in.run(lambda: api.emit("escalation_step", "B-2", step=0, notice="alert",
                                      roles=["grid_worker", "property"]))
        stand_in.run(lambda: api.emit("notification_sent", "B-2", contact="gw-01",
                                      channel="wecom", notice="alert"))
        wait_for(driver, lambda d: "已通知 gw-01 (wecom)" in d.find_element(By.ID, "feed").text,
                 what="the notification in the feed")
        assert "通知 网格员、物业" in driver.find_element(By.ID, "feed").text
        ids = [li.get_attribute("data-id")
               for li in driver.find_elements(By.CSS_SELECTOR, "#incidents li.incident")]
        assert ids == ["B-2", "A-1"], "newest first"
        tile = driver.find_element(
            By.CSS_SELECTOR, '[data-compound="水贝新村"] .tile[data-building="2栋"]')
        wait_for(driver, lambda d: tile.get_attribute("data-worst") == "critical",
                 what="the building tile turning critical")

        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide on a 390px screen"
        button = card(driver, "B-2").find_element(By.CSS_SELECTOR, "button[data-action=ack]")
        assert button.size["height"] >= 40 and button.is_displayed()
        driver.save_screenshot(str(artifact_dir() / "board-phone-zh.png"))

        # English, remembered in localStorage across a reload without ?lang.
        driver.find_element(By.ID, "lang-switch").click()
        wait_for(driver, lambda d: "gas leak" in card(d, "B-2").text, what="English")
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
        driver.get(stand_in.url + "/board")
        wait_for(driver, lambda d: card(d, "B-2") is not None and
                 "Acknowledge" in card(d, "B-2").text, what="English after a reload")

        # Resolve as a false alarm: the card goes, the feed says who closed it and how.
        gas = card(driver, "B-2")
        gas.find_element(By.CSS_SELECTOR, "select.outcome option[value=false_alarm]").click()
        gas.find_element(By.CSS_SELECTOR, "button[data-action=resolve]").click()
        wait_for(driver, lambda d: card(d, "B-2") is None, what="the resolved card to go")
        assert api.incidents["B-2"]["outcome"] == "false_alarm"
        assert api.incidents["B-2"]["resolved_by"] == "board:手机用户"
        wait_for(driver, lambda d: "resolved by board:手机用户: false alarm"
                 in d.find_element(By.ID, "feed").text, what="the feed line")
        driver.save_screenshot(str(artifact_dir() / "board-phone-en.png"))
        no_page_errors(driver)
    assert not api.refused, api.refused


def test_board_refuses_a_post_without_its_csrf_token(stand_in: StandIn) -> None:
    """The page's own script sends the token; a script elsewhere on the same cookie could
    not, and the API refuses it (here: a fetch without the header)."""
    stand_in.run(lambda: stand_in.api.open(incident_json("A-1")))
    with chromium() as driver:
        driver.get(stand_in.url + stand_in.sessions.login_path("王"))
        wait_for(driver, lambda d: card(d, "A-1") is not None, what="the incident")
        status = driver.execute_async_script(
            "var done = arguments[0];"
            "fetch('/api/incidents/A-1/ack', {method: 'POST', headers: {'Content-Type':"
            " 'application/json'}, body: '{\"actor\": \"x\"}'}).then(r => done(r.status));")
        assert status == 403
        assert stand_in.api.incidents["A-1"]["status"] == "firing"
        assert driver.get_cookie("sentinel_board")["httpOnly"] is True
        assert driver.execute_script("return document.cookie") == ""


# -- the real daemon --------------------------------------------------------------------

def smoke_detector() -> Device:
    return next(d for d in LOADED.inventory.values()
                if d.kind == "smoke" and d.profile == "sentinel-json")


def api_get(daemon: DaemonProcess, path: str) -> dict[str, Any]:
    token = (daemon.state_dir / "control.token").read_text().strip()
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.control_port}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


@pytest.fixture
def daemon(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path / "state", mosquitto.port, **{
        "rules__startup_grace": "0", "rules__tick_interval": "0.2",
        "escalation__tick_interval": "0.2", "rules__files": json.dumps([SHIPPED_RULES])})
    try:
        yield process.start()
    finally:
        process.close()


def test_smoke_alarm_appears_live_and_is_acknowledged_with_a_click(
        daemon: DaemonProcess, mosquitto: Mosquitto) -> None:
    """Log in with the control token; a smoke alarm published to the broker appears on the
    open board without a reload; 确认 acknowledges it as board:<name>; the card changes."""
    base = f"http://127.0.0.1:{daemon.control_port}"
    token = (daemon.state_dir / "control.token").read_text().strip()
    smoke = smoke_detector()
    with chromium(1366, 900) as driver:
        driver.get(base + "/board")
        wait_for(driver, lambda d: d.current_url.startswith(base + "/board/login"),
                 what="the login form")
        driver.find_element(By.NAME, "name").send_keys("值班员小李")
        driver.find_element(By.NAME, "token").send_keys(token)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait_for(driver, lambda d: d.current_url.rstrip("/") == base + "/board",
                 what="the board after login")
        wait_for(driver, lambda d: "conn-live" in (d.find_element(By.ID, "conn")
                                                   .get_attribute("class") or ""),
                 what="the live stream")
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#kinds tr[data-kind]"),
                 what="the device counts")
        assert not driver.find_elements(By.CSS_SELECTOR, "#incidents li.incident")

        publisher = Publisher(mosquitto.port, client_id="board-test")
        try:
            for topic, payload in encode(LOADED.profiles[smoke.profile], smoke,
                                         {"alarm": True, "battery": 90.0}, time.time(),
                                         LOADED.kinds):
                publisher.publish(topic, payload)
            publisher.flush()
        finally:
            publisher.close()

        selector = '#incidents li.incident[data-name="smoke_alarm"]'
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, selector),
                 what="the smoke alarm to appear live")
        item = driver.find_element(By.CSS_SELECTOR, selector)
        incident_id = item.get_attribute("data-id")
        assert item.get_attribute("data-status") == "firing"
        assert "烟感报警" in item.text and smoke.location in item.text
        tile = driver.find_element(By.CSS_SELECTOR, f'[data-compound="{smoke.compound}"] '
                                                    f'.tile[data-building="{smoke.building}"]')
        wait_for(driver, lambda d: tile.get_attribute("data-worst") in ("critical",
                                                                       "emergency"),
                 what="the building tile turning red")

        item.find_element(By.CSS_SELECTOR, "button[data-action=ack]").click()
        wait_for(driver, lambda d: card_status(d, incident_id) == "acknowledged",
                 what="the acknowledged state")
        wait_for(driver, lambda d: "board:值班员小李" in card(d, incident_id).text,
                 what="who acknowledged")
        assert "已确认" in card(driver, incident_id).text
        wait_for(driver, lambda d: "board:值班员小李 已确认" in
                 d.find_element(By.ID, "feed").text, what="the acknowledgement in the feed")
        # The per-alert record against GB 50440 on the card, once a page was accepted.
        wait_for(driver, lambda d: re.search(r"首条通知 \d+\.\d+ s（限 10 s）", " ".join(
            e.text for e in card(d, incident_id).find_elements(
                By.CSS_SELECTOR, "[data-role=latency]"))),
                 what="the alarm's first-notification time on its card")
        driver.save_screenshot(str(artifact_dir() / "board-daemon-acknowledged.png"))
        no_page_errors(driver)

    found = api_get(daemon, f"/api/incidents/{incident_id}")["incident"]
    assert found["status"] == "acknowledged"
    assert found["acknowledged_by"] == "board:值班员小李"
    assert wait_until(lambda: daemon.alive, 1)
