"""Headless Debian Chromium, driven through Selenium and Debian's chromedriver.

Only the system browser: Selenium is given both paths, so its driver manager never looks for
(or downloads) a browser or a driver. A missing browser fails the test with the command that
installs it; it is never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

from helpers import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

FLAGS = (
    "--headless=new",
    "--no-sandbox",            # tests run as root on CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",  # /dev/shm is small in containers
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
)


def artifact_dir() -> Path:
    """Where tests keep screenshots: $SENTINEL_TEST_ARTIFACTS, else test-artifacts/."""
    path = Path(os.environ.get("SENTINEL_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_chromium() -> None:
    """Fail (never skip) when the browser or its driver is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not found: the board's browser test needs Debian's "
            "chromium; install it with `apt-get install -y chromium chromium-driver` "
            "(scripts/test.sh does)")


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900, lang: str = "zh-CN",
             mobile: bool = False, autoplay: bool = False) -> Iterator[WebDriver]:
    """A headless Chromium WebDriver with a fresh profile; quit, and the profile removed,
    afterwards. `mobile` emulates a phone of `width` x `height` CSS pixels. `autoplay`
    lets pages play sound without a click first, as a wall screen's browser is set up
    (the board's alarm)."""
    require_chromium()
    # Selenium's driver manager must not phone home (statistics) or fetch anything.
    os.environ.setdefault("SE_AVOID_STATS", "true")
    os.environ.setdefault("SE_OFFLINE", "true")
    profile = tempfile.mkdtemp(prefix="sentinel-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--lang={lang}")
    if autoplay:
        options.add_argument("--autoplay-policy=no-user-gesture-required")
    if mobile:
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0},
            "userAgent": ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
                          "(KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36")})
    # The browser's console (script errors, CSP refusals) for the test to assert on.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    log_path = Path(profile) / "chromedriver.log"
    service = Service(executable_path=CHROMEDRIVER, log_output=str(log_path))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: WebDriver) -> list[str]:
    """Severe console messages since the last call (script errors, CSP violations)."""
    entries = driver.get_log("browser")
    return [str(e.get("message")) for e in entries if e.get("level") == "SEVERE"]


def set_viewport(driver: WebDriver, width: int, height: int) -> None:
    """Make the page's own viewport `width` x `height` CSS pixels: `--window-size` sizes
    the window, whose frame takes some of it even when headless."""
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    outer = driver.get_window_size()
    driver.set_window_size(outer["width"] + width - inner[0],
                           outer["height"] + height - inner[1])
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    assert inner == [width, height], f"the viewport is {inner}, not {width}x{height}"
