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

from browser import artifact_dir, chromium, console_errors, set_viewport
from daemon import LOADED, DaemonProcess, Publisher, wait_until
from servers import Mosquitto
from test_board import KEY, FakeBoardApi, incident_json

T = TypeVar("T")
SHIPPED_RULES = str(Path(LOADED.config_path).parent / "rules.toml")


def wait_for(driver: WebDriver, predicate: Callable[[WebDriver], T], timeout: float = 15,
             what: str = "") -> T:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=(
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


def no_page_errors(driver: WebDriver, allowed: tuple[str, ...] = ()) -> None:
    errors = [e for e in console_errors(driver)
              if "favicon" not in e and not any(a in e for a in allowed)]
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


@pytest.fixture(scope="module")
def stand_in_server() -> Iterator[StandIn]:
    """One stand-in server for the module (its event numbers keep growing across tests)."""
    with StandIn() as server:
        yield server


@pytest.fixture
def stand_in(stand_in_server: StandIn) -> StandIn:
    """The module's stand-in, with no incident and no event (each test has its own browser,
    so event numbers may start again)."""
    api = stand_in_server.api
    stand_in_server.run(lambda: (api.incidents.clear(), api.events.clear(),
                                 api.attempts.clear(), api.watches.last.clear(),
                                 api.refused.clear()))
    return stand_in_server


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
        wait_for(driver, lambda d: "已通知 gw-01 (企业微信)" in d.find_element(By.ID, "feed").text,
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

        # Resolve as a false alarm: nobody acknowledged the leak, so the confirmation
        # asks for a ticked box first; then the card goes, the feed says who and how.
        gas = card(driver, "B-2")
        gas.find_element(By.CSS_SELECTOR, "select.outcome option[value=false_alarm]").click()
        gas.find_element(By.CSS_SELECTOR, "button[data-action=resolve]").click()
        wait_for(driver, lambda d: "Nobody has acknowledged" in card(d, "B-2").text,
                 what="the confirmation")
        assert api.incidents["B-2"]["status"] == "firing"
        js_click(driver, '#incidents li[data-id="B-2"] [data-role=override]')
        js_click(driver, '#incidents li[data-id="B-2"] [data-action=resolve-confirm]')
        wait_for(driver, lambda d: card(d, "B-2") is None, what="the resolved card to go")
        assert api.incidents["B-2"]["outcome"] == "false_alarm"
        assert api.incidents["B-2"]["resolved_by"] == "board:手机用户"
        wait_for(driver, lambda d: "resolved by 手机用户 (board): false alarm"
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


def publish_alarm(mosquitto: Mosquitto, device: Device, client_id: str) -> None:
    """The detector's alarm, in its vendor format, through the real broker."""
    publisher = Publisher(mosquitto.port, client_id=client_id)
    try:
        for topic, payload in encode(LOADED.profiles[device.profile], device,
                                     {"alarm": True, "battery": 90.0}, time.time(),
                                     LOADED.kinds):
            publisher.publish(topic, payload)
        publisher.flush()
    finally:
        publisher.close()


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

        publish_alarm(mosquitto, smoke, "board-test")

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
        wait_for(driver, lambda d: "值班员小李 (值班屏)" in card(d, incident_id).text,
                 what="who acknowledged")
        assert "已确认" in card(driver, incident_id).text
        wait_for(driver, lambda d: "值班员小李 (值班屏) 已确认" in
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


def api_post(daemon: DaemonProcess, path: str, body: dict[str, Any]) -> dict[str, Any]:
    token = (daemon.state_dir / "control.token").read_text().strip()
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemon.control_port}{path}", data=json.dumps(body).encode(),
        method="POST", headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def test_a_personal_login_acts_under_its_contact_id(
        daemon: DaemonProcess, mosquitto: Mosquitto) -> None:
    """A grid worker's personal board link (`sentinel board --person gw-01` asks the same
    API): the board greets them by name, and their 确认 is recorded as gw-01, not as a
    typed name."""
    base = f"http://127.0.0.1:{daemon.control_port}"
    smoke = smoke_detector()
    publish_alarm(mosquitto, smoke, "board-personal")
    link = api_post(daemon, "/api/board/login-link", {"person": "gw-01"})
    assert link["person"] == "gw-01" and link["role"] == "operator"
    with chromium(1920, 1080) as driver:
        driver.get(base + link["path"])
        wait_for(driver, lambda d: d.current_url.rstrip("/").endswith("/board"),
                 what="the board after the personal link")
        wait_for(driver, lambda d: "王晓红" in d.find_element(By.TAG_NAME, "header").text,
                 what="the board greeting the person by name")
        selector = '#incidents li.incident[data-name="smoke_alarm"]'
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, selector),
                 what="the smoke alarm")
        item = driver.find_element(By.CSS_SELECTOR, selector)
        incident_id = item.get_attribute("data-id")
        item.find_element(By.CSS_SELECTOR, "button[data-action=ack]").click()
        wait_for(driver, lambda d: card_status(d, incident_id) == "acknowledged",
                 what="the acknowledged state")
        wait_for(driver, lambda d: "王晓红" in card(d, incident_id).text,
                 what="the person's name on the card")
        driver.save_screenshot(str(artifact_dir() / "board-personal-login-zh.png"))
        no_page_errors(driver)
        # The link worked once: opening it again leads to the login form, not the board.
        driver.delete_all_cookies()
        driver.get(base + link["path"])
        wait_for(driver, lambda d: "/board/login" in d.current_url and
                 d.find_elements(By.NAME, "token"), what="a used link refused")
    found = api_get(daemon, f"/api/incidents/{incident_id}")["incident"]
    assert found["acknowledged_by"] == "gw-01"


# -- the Shuibei story at its peak, on a 1920x1080 wall screen ---------------------------

def place_at(compound: str, building: str, kind: str, device: str, where: str,
             floor: str = "") -> dict[str, str]:
    return {"community": "水贝社区", "compound": compound, "building": building,
            "floor": floor, "unit": "", "grid": "SB-G01",
            "location": f"{compound}{building}{where}", "kind": kind, "device": device}


def peak(now: float) -> list[dict[str, Any]]:
    """A confirmed fire (two smoke alarms and a tank drawn down, folded under it), a gas
    leak, a fall raised to emergency (the oldest), an SOS, and 30 newer tank warnings."""
    fire_place = place_at("水贝花园", "1栋", "smoke", "SB-SMK-0001", "3楼")
    incidents = [
        incident_json("FALL", "fall", "emergency", now - 900,
                      place_at("水贝新村", "2栋", "elderly_watch", "SB-WCH-0001", "5楼502"),
                      kind="elderly_watch"),
        incident_json("S1", "smoke_alarm", "critical", now - 300, fire_place, groups=["FIRE"]),
        incident_json("S2", "smoke_alarm", "critical", now - 290,
                      place_at("水贝花园", "1栋", "smoke", "SB-SMK-0002", "11楼走廊"),
                      groups=["FIRE"]),
        incident_json("T1", "tank_level_falling", "warning", now - 200,
                      place_at("水贝花园", "1栋", "water_level", "SB-TNK-0001", "屋顶水箱"),
                      attached_to="FIRE"),
        incident_json("FIRE", "fire_confirmed", "critical", now - 289, fire_place,
                      members=["S1", "S2", "T1"], device_id=None,
                      timing={"received": now - 289, "accepted": now - 287.8}),
        incident_json("GAS", "gas_leak", "critical", now - 250,
                      place_at("水贝新村", "1栋", "gas", "SB-GAS-0001", "1楼101厨房")),
        incident_json("SOS", "sos", "critical", now - 240,
                      place_at("水贝花园", "2栋", "elderly_watch", "SB-WCH-0002", "7楼"),
                      kind="elderly_watch"),
    ]
    buildings = [("水贝花园", "2栋"), ("水贝花园", "10栋"), ("水贝新村", "1栋"),
                 ("水贝新村", "2栋")]
    for i in range(30):
        compound, building = buildings[i % len(buildings)]
        incidents.append(incident_json(
            f"TANK-{i:02d}", "tank_level_falling", "warning", now - 100 + i,
            place_at(compound, building, "water_level", f"SB-TNK-{i + 10:04d}", "水箱")))
    return incidents


def card_ids(driver: WebDriver) -> list[str]:
    return [li.get_attribute("data-id") or ""
            for li in driver.find_elements(By.CSS_SELECTOR, "#incidents > li.incident")]


def alarm_state(driver: WebDriver) -> tuple[str | None, bool]:
    """(the page's alarm state, whether the siren is playing)."""
    found = driver.execute_script(
        "var a = document.getElementById('alarm-sound');"
        "return [document.body.getAttribute('data-alarm'), !a.paused && a.currentTime > 0];")
    return found[0], bool(found[1])


def js_click(driver: WebDriver, css: str, value: str | None = None,
             select: str | None = None) -> None:
    """Click what `css` finds, in one step of the page's own event loop: the board
    re-renders on every event, so an element found in one WebDriver call may be gone in
    the next. With `select` and `value`, first choose `value` in that <select>."""
    done = driver.execute_script(
        "var s = arguments[1] && document.querySelector(arguments[1]);"
        "if (s) { s.value = arguments[2]; s.dispatchEvent(new Event('change')); }"
        "var b = document.querySelector(arguments[0]);"
        "if (!b || b.disabled) { return false; }"
        "b.scrollIntoView({block: 'center'}); b.click(); return true;", css, select, value)
    assert done, f"nothing to click at {css}"


def click_action(driver: WebDriver, incident_id: str, action: str) -> None:
    js_click(driver, f'#incidents li[data-id="{incident_id}"] > .actions '
                     f"[data-action={action}]")


# Words of the code that must never reach a person reading the board in Chinese.
INTERNAL_WORDS = re.compile(
    r"\b(firing|acknowledged|resolved|assigned|noted|attempt|board|link|sentinel|"
    r"false_alarm|with_group|member_added|fire_confirmed|smoke_alarm|opened|grid|"
    r"compound|operator|viewer|null|undefined|NaN)\b", re.I)


def english_words(text: str) -> list[str]:
    """Latin words in a Chinese page, other than ids (they hold digits or hyphens), names
    written in Latin in Chinese too (MQTT, SOS), units and the link to English."""
    return [w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_\-.:]*", text)
            if not re.search(r"[\d\-]", w) and w not in ("MQTT", "SOS", "English", "s", "V")]


def test_peak_of_the_shuibei_story_on_a_wall_screen(stand_in: StandIn) -> None:
    """At 1920x1080: the emergency and the confirmed fire are the first two cards, the fire's
    alarms folded under it, and the page does not scroll (its panels do). The siren plays
    while a critical incident is unacknowledged; acknowledging (the fire's one button acts
    on its alarms too) stops it; a new critical starts it again, a mute silences it with a
    banner, and a newer critical ends the mute. The timeline shows deliveries and the
    latency record; assign, a note and resolving with an outcome act from it."""
    from sentinel.types import Reading

    api = stand_in.api
    now = time.time()
    stand_in.run(lambda: [api.open(inc) for inc in peak(now)])
    stand_in.run(lambda: api.emit("escalation_step", "FIRE", step=0, roles=["grid_worker"]))
    api.attempts["FIRE"] = [{"type": "attempt", "id": 1, "outbox_id": 1, "step": 0,
                             "contact_id": "zhang_wei", "channel": "wecom",
                             "channel_label": "企业微信", "channel_type": "wecom",
                             "ts": now - 288, "ok": True,
                             "error": None, "elapsed": 0.3}]
    stand_in.run(lambda: api.watches.put([Reading(
        "SB-WCH-0002", "elderly_watch", now, now,
        {"latitude": 22.5700, "longitude": 114.1203})]))
    with chromium(1920, 1080, autoplay=True) as driver:
        set_viewport(driver, 1920, 1080)
        driver.get(stand_in.url + stand_in.sessions.login_path("值班员小李"))
        wait_for(driver, lambda d: len(card_ids(d)) == 34, what="34 cards (3 folded)")
        ids = card_ids(driver)
        assert ids[:2] == ["FALL", "FIRE"], ids[:6]
        assert ids[2:4] == ["SOS", "GAS"], "critical, newest first"
        assert not {"S1", "S2", "T1"} & set(ids), "the fire's alarms are folded under it"
        fire = card(driver, "FIRE")
        assert [li.get_attribute("data-id") for li in fire.find_elements(
            By.CSS_SELECTOR, ".member-list li")] == ["S1", "S2", "T1"], "by floor"
        assert "组内报警位置: 3楼、11楼、屋顶水箱" in fire.text
        assert not fire.find_elements(By.CSS_SELECTOR, ".member-list button"), \
            "one set of buttons, the group's"
        page = driver.execute_script(
            "var e = document.documentElement, l = document.getElementById('incidents');"
            "return [e.scrollHeight, e.clientHeight, e.scrollWidth, e.clientWidth,"
            " l.scrollHeight, l.clientHeight];")
        assert page[0] <= page[1] and page[2] <= page[3], f"the page scrolls: {page}"
        assert page[4] > page[5], "the incident panel scrolls inside itself"
        # The site plan: the fire's, gas and SOS buildings stand out; the SOS watch shows.
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#siteplan svg .building"),
                 what="the site plan")
        alarmed = {(g.get_attribute("data-compound"), g.get_attribute("data-building"))
                   for g in driver.find_elements(By.CSS_SELECTOR, "#siteplan .building.alarm")}
        assert alarmed == {("水贝花园", "1栋"), ("水贝花园", "2栋"), ("水贝新村", "1栋"),
                           ("水贝新村", "2栋")}
        assert driver.find_elements(
            By.CSS_SELECTOR, '#siteplan .watch.alarm[data-device="SB-WCH-0002"]')
        wait_for(driver, lambda d: alarm_state(d) == ("sounding", True), what="the siren")
        assert "报警: 4 起严重或紧急事件未确认" in driver.find_element(By.ID, "alarm").text
        # The same numbers everywhere: the chips count cards and say how many of them
        # nobody acknowledged (1 + 3 = the banner's 4); the heading counts cards too.
        chips = {c.get_attribute("data-severity"): (c.get_attribute("data-count"),
                                                    c.get_attribute("data-unacked"))
                 for c in driver.find_elements(By.CSS_SELECTOR, "#severity-counts .chip")}
        assert chips["emergency"] == ("1", "1") and chips["critical"] == ("3", "3"), chips
        assert chips["warning"] == ("30", "30"), chips
        assert " ".join(driver.find_element(By.ID, "h-incidents").text.split()) == \
            "未关闭事件 34 另有组内报警 3 起, 折叠在所属事件下"
        driver.save_screenshot(str(artifact_dir() / "board-1920-peak-zh.png"))
        text = driver.find_element(By.TAG_NAME, "body").text
        assert not INTERNAL_WORDS.findall(text) and not english_words(text), \
            english_words(text)

        # Acknowledge the four: the fire's button acknowledges its two smoke alarms too.
        for incident_id in ("FALL", "FIRE", "SOS", "GAS"):
            click_action(driver, incident_id, "ack")
            wait_for(driver, lambda d, i=incident_id: card_status(d, i) == "acknowledged",
                     what=f"{incident_id} acknowledged")
        assert api.incidents["S1"]["status"] == api.incidents["S2"]["status"] == "acknowledged"
        wait_for(driver, lambda d: alarm_state(d) == ("off", False), what="the siren to stop")
        assert not driver.find_element(By.ID, "alarm").is_displayed()

        # A new critical starts it; muting silences it with a banner saying until when.
        stand_in.run(lambda: api.open(incident_json(
            "NEW-1", opened_at=time.time(), place=place_at("水贝新村", "2栋", "smoke",
                                                            "SB-SMK-0100", "2楼"))))
        wait_for(driver, lambda d: alarm_state(d) == ("sounding", True),
                 what="the siren for a new critical")
        driver.find_element(By.CSS_SELECTOR, "#alarm .btn-mute[data-minutes='5']").click()
        wait_for(driver, lambda d: alarm_state(d)[0] == "muted", what="the mute")
        banner = driver.find_element(By.ID, "alarm")
        assert banner.is_displayed() and "报警声已静音至" in banner.text
        assert driver.execute_script("return document.getElementById('alarm-sound').paused")
        driver.save_screenshot(str(artifact_dir() / "board-1920-muted-zh.png"))
        # A newer critical is not covered by that mute: the siren sounds again.
        stand_in.run(lambda: api.open(incident_json(
            "NEW-2", opened_at=time.time(), place=place_at("水贝新村", "1栋", "smoke",
                                                            "SB-SMK-0101", "4楼"))))
        wait_for(driver, lambda d: alarm_state(d) == ("sounding", True),
                 what="the siren for a newer critical")
        click_action(driver, "NEW-2", "ack")
        click_action(driver, "NEW-1", "ack")
        wait_for(driver, lambda d: alarm_state(d) == ("off", False), what="silence again")

        # The fire's timeline: events, the delivery, the latency record.
        js_click(driver, '#incidents li[data-id="FIRE"] .inc-title')
        timeline = driver.find_element(By.ID, "timeline")
        wait_for(driver, lambda d: timeline.get_attribute("data-id") == "FIRE",
                 what="the fire's timeline")
        wait_for(driver, lambda d: "已送达 张伟 (企业微信)" in timeline.text, what="the delivery")
        assert "值班员小李 (值班屏) 确认" in timeline.text
        assert "首条通知 1.20 s（限 10 s）" in timeline.find_element(
            By.CSS_SELECTOR, "[data-role=latency-record]").text

        # Assign it, note what was found, resolve it with an outcome.
        js_click(driver, "#timeline [data-action=assign]", "zhang_wei",
                 "#timeline select.person")
        wait_for(driver, lambda d: "负责人: 张伟" in card(d, "FIRE").text, what="the assignee")
        wait_for(driver, lambda d: "值班员小李 (值班屏) 指派给 张伟" in
                 d.find_element(By.ID, "timeline").text, what="the assignment line")
        assert api.incidents["S1"]["assigned_to"] == "zhang_wei", "members too"
        driver.find_element(By.CSS_SELECTOR, "#timeline .note-text").send_keys(
            "已到现场, 3楼厨房起火已扑灭")
        js_click(driver, "#timeline [data-action=note]")
        wait_for(driver, lambda d: "值班员小李 (值班屏) 记录: 已到现场, 3楼厨房起火已扑灭" in
                 d.find_element(By.ID, "timeline").text, what="the note in the timeline")
        assert driver.find_element(By.CSS_SELECTOR, "#timeline .note-text") \
            .get_attribute("value") == "", "the sent note leaves the box"
        driver.save_screenshot(str(artifact_dir() / "board-1920-timeline-zh.png"))
        text = driver.find_element(By.TAG_NAME, "body").text
        assert not INTERNAL_WORDS.findall(text) and not english_words(text), \
            english_words(text)

        js_click(driver, "#timeline [data-action=resolve]", "handled",
                 "#timeline select.outcome")
        wait_for(driver, lambda d: "将发送关闭通知给: 张伟" in d.find_element(
            By.CSS_SELECTOR, "#timeline [data-role=confirm]").text,
                 what="who the closing notice goes to")
        confirm = driver.find_element(By.CSS_SELECTOR, "#timeline [data-role=confirm]").text
        assert "将关闭: 确认火情 · 水贝花园1栋3楼 (连同组内报警 3 起)" in confirm, confirm
        assert "处理结果: 已处置" in confirm and "尚无人确认" not in confirm
        js_click(driver, "#timeline [data-action=resolve-confirm]")
        wait_for(driver, lambda d: card(d, "FIRE") is None, what="the fire resolved")
        assert [api.incidents[i]["status"] for i in ("FIRE", "S1", "S2", "T1")] == \
            ["resolved"] * 4
        assert api.incidents["FIRE"]["outcome"] == "handled"
        wait_for(driver, lambda d: "值班员小李 (值班屏) 关闭, 结果: 已处置" in
                 d.find_element(By.ID, "timeline").text, what="the resolution line")
        no_page_errors(driver)

        # English on request, the same screen.
        driver.get(stand_in.url + "/board?lang=en")
        wait_for(driver, lambda d: "Site plan" in d.find_element(By.ID, "h-plan").text and
                 card(d, "FALL") is not None and "fall" in card(d, "FALL").text.lower(),
                 what="English")
        assert card_ids(driver)[0] == "FALL"

        # A viewer's page: the same board, no button to act with anywhere.
        driver.get(stand_in.url + "/board-viewer")
        wait_for(driver, lambda d: card(d, "FALL") is not None, what="the viewer's board")
        js_click(driver, '#incidents li[data-id="FALL"] .inc-title')
        wait_for(driver, lambda d: d.find_element(By.ID, "timeline").get_attribute(
            "data-id") == "FALL", what="the viewer's timeline")
        assert not driver.find_elements(By.CSS_SELECTOR, "[data-action]")
        assert not driver.find_elements(By.CSS_SELECTOR, "#timeline textarea, #timeline select")
        no_page_errors(driver)
    assert not api.refused, api.refused


# -- closing on purpose; what a person does survives the redraws -------------------------

def choose(driver: WebDriver, css: str, value: str) -> None:
    """Pick `value` in the <select> at `css` as a person does (WebDriver clicks the option);
    again if a redraw replaced the element between finding and clicking it."""
    from selenium.webdriver.support.ui import Select
    for _ in range(20):
        try:
            Select(driver.find_element(By.CSS_SELECTOR, css)).select_by_value(value)
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"could not choose {value} at {css}")


def fire_by_floors(now: float) -> list[dict[str, Any]]:
    """The review's fire: smoke alarms on 20楼, 3楼, 11楼 and 13楼 (arriving in that order)
    and a hydrant, folded under the confirmed fire in 水贝花园 2栋; an unacknowledged fall
    (emergency) whose page reached two people; a detector offline (a warning, not life
    safety: nothing is due for it) and a maintenance item (the daily digest's)."""
    def smoke(i: str, floor: str, where: str, at: float) -> dict[str, Any]:
        return incident_json(i, "smoke_alarm", "critical", at,
                             place_at("水贝花园", "2栋", "smoke", f"SB-SMK-{i}", where, floor),
                             groups=["FIRE"])
    members = [smoke("M20", "20", "20楼走廊", now - 300), smoke("M3", "3", "3楼306室卧室",
                                                             now - 290),
               smoke("M11", "11", "11楼走廊", now - 280), smoke("M13", "13", "13楼走廊",
                                                            now - 270),
               incident_json("H1", "hydrant_pressure_low", "warning", now - 260,
                             place_at("水贝花园", "2栋", "hydrant", "SB-HYD-0001", "南侧消火栓"),
                             attached_to="FIRE")]
    return [*members,
            incident_json("FIRE", "fire_confirmed", "critical", now - 265,
                          place_at("水贝花园", "2栋", "smoke", "SB-SMK-M3", ""),
                          members=[m["id"] for m in members], device_id=None,
                          timing={"received": now - 265, "accepted": now - 264}),
            incident_json("FALL", "fall", "emergency", now - 200,
                          place_at("水贝新村", "2栋", "elderly_watch", "SB-WCH-0001", "5楼502"),
                          kind="elderly_watch"),
            incident_json("OFF", "detector_offline", "warning", now - 500,
                          place_at("水贝新村", "1栋", "gas", "SB-GAS-0053", "1楼厨房"),
                          timing={"received": now - 500}),
            incident_json("MAINT", "battery_low", "maintenance", now - 900,
                          place_at("水贝花园", "1栋", "smoke", "SB-SMK-0099", "9楼"),
                          timing={"received": now - 900})]


def test_closing_takes_an_outcome_and_a_confirmation_and_redraws_keep_what_is_done(
        stand_in: StandIn) -> None:
    """处理完毕 with nothing chosen asks for an outcome; with one it shows what closes and
    who is told, and an unacknowledged emergency needs a ticked box as well. A fire's
    alarms are listed by floor on its card; the compound and the building in trouble come
    first on the map. A fold opened by hand, an outcome chosen and a note being typed
    survive redraws that change the card and the timeline under them."""
    api = stand_in.api
    now = time.time()
    def start() -> None:
        for inc in fire_by_floors(now):
            api.open(inc)
    stand_in.run(start)
    ok = {"type": "attempt", "outbox_id": 1, "step": 0, "channel": "wecom",
          "channel_label": "企业微信", "channel_type": "wecom", "ts": now - 199,
          "ok": True, "error": None,
          "elapsed": 0.2}
    api.attempts["FALL"] = [{**ok, "id": 1, "contact_id": "zhang_wei"},
                            {**ok, "id": 2, "contact_id": "li_na"},
                            {**ok, "id": 3, "contact_id": "li_na", "ok": False}]
    with chromium(1600, 1000) as driver:
        driver.get(stand_in.url + stand_in.sessions.login_path("值班员小李"))
        wait_for(driver, lambda d: card_ids(d) == ["FALL", "FIRE", "OFF", "MAINT"],
                 what="four cards, the fire's five alarms folded")
        fire = card(driver, "FIRE")
        assert [li.get_attribute("data-id") for li in fire.find_elements(
            By.CSS_SELECTOR, ".member-list li")] == ["M3", "M11", "M13", "M20", "H1"]
        floors = fire.find_element(By.CSS_SELECTOR, "[data-role=member-floors]")
        assert floors.text == "组内报警位置: 3楼、11楼、13楼、20楼、南侧消火栓"
        assert floors.is_displayed() and fire.find_element(By.TAG_NAME, "details") \
            .get_attribute("open") is None, "floors show with the fold closed (5 alarms)"
        # The map: the compound with the emergency first, the building in trouble first.
        order = driver.execute_script(
            "return Array.prototype.map.call(document.querySelectorAll('#compounds .compound'),"
            " function (c) { return [c.getAttribute('data-compound')].concat("
            " Array.prototype.map.call(c.querySelectorAll('.tile'),"
            " function (t) { return t.getAttribute('data-building'); })); });")
        assert order == [["水贝新村", "2栋", "1栋"], ["水贝花园", "2栋", "1栋", "10栋"]], order
        # Nothing was due for the detector offline; the maintenance item waits for the digest.
        assert not card(driver, "OFF").find_elements(By.CSS_SELECTOR, "[data-role=latency]")
        assert "列入每日维护日报" in card(driver, "MAINT").text
        assert "尚未送达" not in driver.find_element(By.ID, "incidents").text

        # 处理完毕 with no outcome: a hint, nothing closed.
        fall = '#incidents li[data-id="FALL"]'
        assert driver.find_element(By.CSS_SELECTOR, f"{fall} select.outcome") \
            .get_attribute("value") == "", "no outcome chosen for the person"
        js_click(driver, f"{fall} [data-action=resolve]")
        wait_for(driver, lambda d: "请先选择处理结果" in card(d, "FALL").text, what="the hint")
        choose(driver, f"{fall} select.outcome", "false_alarm")
        wait_for(driver, lambda d: "请先选择处理结果" not in card(d, "FALL").text,
                 what="the hint to go")
        js_click(driver, f"{fall} [data-action=resolve]")
        wait_for(driver, lambda d: "将发送关闭通知给: 张伟、李娜" in card(d, "FALL").text,
                 what="who will be told")
        text = card(driver, "FALL").text
        assert "将关闭: 跌倒 · 水贝新村2栋5楼502" in text and "处理结果: 误报" in text
        assert "此事件尚无人确认" in text
        go = f"{fall} [data-action=resolve-confirm]"
        assert driver.find_element(By.CSS_SELECTOR, go).get_attribute("disabled") is not None
        driver.execute_script("document.querySelector(arguments[0]).click()", go)
        driver.find_element(By.CSS_SELECTOR, f"{fall} [data-role=override]").click()
        wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, go).is_enabled(),
                 what="the second step to enable closing")
        assert api.incidents["FALL"]["status"] == "firing", "nothing closed before confirming"
        driver.save_screenshot(str(artifact_dir() / "board-resolve-confirm-zh.png"))
        driver.find_element(By.CSS_SELECTOR, f"{fall} [data-role=resolve-note]") \
            .send_keys("家属已到场, 老人无碍")
        driver.find_element(By.CSS_SELECTOR, go).click()
        wait_for(driver, lambda d: card(d, "FALL") is None, what="the fall closed")
        assert api.incidents["FALL"]["outcome"] == "false_alarm"
        assert api.incidents["FALL"]["note"] == "家属已到场, 老人无碍"
        wait_for(driver, lambda d: d.find_element(
            By.CSS_SELECTOR, "#compounds .compound").get_attribute("data-compound") == "水贝花园",
                 what="the fire's compound first once the fall is closed")

        # Open the fold by hand, choose an outcome on the card, start a note in the
        # fire's timeline; then alarms keep joining the fire (each redraws its card and
        # its timeline) while other events redraw the rest.
        driver.find_element(By.CSS_SELECTOR, '#incidents li[data-id="FIRE"] summary').click()
        choose(driver, '#incidents li[data-id="FIRE"] select.outcome', "referred")
        js_click(driver, '#incidents li[data-id="FIRE"] .inc-title')
        wait_for(driver, lambda d: d.find_element(By.ID, "timeline")
                 .get_attribute("data-id") == "FIRE", what="the fire's timeline")
        note = driver.find_element(By.CSS_SELECTOR, "#timeline [data-role=note-text]")
        note.click()
        note.send_keys("正在疏散 11 楼")
        # The very elements, not look-alikes: a kept <select> keeps an open dropdown, a
        # kept text box its caret and an input method's half-typed word.
        driver.execute_script(
            "document.querySelector('#incidents li[data-id=\"FIRE\"] select.outcome')"
            "._kept = true; document.querySelector('#timeline [data-role=note-text]')"
            "._kept = true;")
        for n, floor in enumerate(("5", "6", "7"), start=6):
            member = incident_json(f"M{floor}", "smoke_alarm", "critical", time.time(),
                                   place_at("水贝花园", "2栋", "smoke", f"SB-SMK-X{floor}",
                                            f"{floor}楼走廊", floor), groups=["FIRE"])

            def join(member: dict[str, Any] = member) -> None:
                api.open(member)
                api.incidents["FIRE"]["members"].append(member["id"])
                api.emit("member_added", "FIRE", member=member["id"])
                api.emit("notification_sent", "OFF", contact="li_na", channel="wecom",
                         channel_label="企业微信")
            stand_in.run(join)
            def joined(d: WebDriver, n: int = n, floor: str = floor) -> bool:
                return (f"组内报警 {n} 起" in card(d, "FIRE").text and
                        f"新增组内报警: 烟感报警 · {floor}楼走廊" in
                        d.find_element(By.ID, "timeline").text)
            wait_for(driver, joined, what=f"alarm {n} joining")
            state = driver.execute_script(
                "var c = document.querySelector('#incidents li[data-id=\"FIRE\"]');"
                "var a = document.activeElement;"
                "var n = document.querySelector('#timeline [data-role=note-text]');"
                "var s = c.querySelector('select.outcome');"
                "return [c.querySelector('details').open, s.value, s._kept === true,"
                " n.value, n._kept === true, a && a.getAttribute('data-role')];")
            assert state == [True, "referred", True, "正在疏散 11 楼", True, "note-text"], state
        note = driver.find_element(By.CSS_SELECTOR, "#timeline [data-role=note-text]")
        note.send_keys(", 已完成")
        assert note.get_attribute("value") == "正在疏散 11 楼, 已完成", "typing goes on"
        assert card(driver, "FIRE").find_element(By.CSS_SELECTOR, "[data-role=member-floors]") \
            .text == "组内报警位置: 3楼、5楼、6楼、7楼、11楼、13楼、20楼、南侧消火栓"
        driver.save_screenshot(str(artifact_dir() / "board-fire-by-floor-zh.png"))
        text = driver.find_element(By.TAG_NAME, "body").text
        assert not INTERNAL_WORDS.findall(text) and not english_words(text), \
            english_words(text)
        no_page_errors(driver)
    assert not api.refused, api.refused
