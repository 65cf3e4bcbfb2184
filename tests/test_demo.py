"""The README's main job, `sentinel demo`, on a private broker: the scripted fire is
detected and paged, through the demo's local inbox only; while it runs, the commands it
suggests work against it, and its board link signs a browser in."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from helpers import ROOT, sentinel
from servers import Mosquitto


def test_demo_pages_the_scripted_fire_through_its_local_inbox(mosquitto: Mosquitto,
                                                               tmp_path: Path) -> None:
    """The fire at 15 s opens a confirmed fire; every tier is notified via the inbox,
    which the live view shows; Ctrl-C-equivalent (duration) stops it cleanly."""
    state = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel", "demo", "--duration", "40", "--state-dir",
         str(state), "--broker", f"127.0.0.1:{mosquitto.port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not any("/board/login/" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        # What the demo tells the operator to run works against it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
        env["SENTINEL_STATE_DIR"] = str(state)
        status = sentinel("status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["devices"]["total"] == 1005
        link = next(re.search(r"(http://127\.0\.0\.1:\d+/board/login/\S+)", line)
                    for line in lines if "/board/login/" in line)
        assert link is not None
        parts = urlsplit(link.group(1))
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        conn.request("GET", parts.path)
        answer = conn.getresponse()
        assert answer.status in (302, 303) and "sentinel_board" in answer.headers["Set-Cookie"]
        conn.close()
        proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    assert proc.returncode == 0, (proc.stderr.read() if proc.stderr else "")[-3000:]
    out = "".join(lines)
    assert "本地收件箱" in out and "确认火情" in out
    assert "/metrics" in out and f"SENTINEL_STATE_DIR={state}" in out
    shown = [line for line in out.splitlines() if line.startswith("📨")]
    inbox = [json.loads(line) for line in (state / "inbox.jsonl").read_text().splitlines()]
    assert len(shown) == len(inbox) > 0
    fire = [m for m in inbox if "确认火情" in m["title"] or "confirmed fire" in m["title"]]
    # The fire pages every tier: grid worker, property, duty officer, street office, fire
    # liaison (who reads English).
    assert {m["contact"].split("-")[0] for m in fire} == {"gw", "pm", "do", "so", "fl"}
    assert "已停止" in out
