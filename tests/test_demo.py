"""The README's main job, `sentinel demo`, on a private broker: the scripted fire is
detected and paged, through the demo's local inbox only."""

from __future__ import annotations

import json
import re
from pathlib import Path

from helpers import sentinel
from servers import Mosquitto


def test_demo_pages_the_scripted_fire_through_its_local_inbox(mosquitto: Mosquitto,
                                                               tmp_path: Path) -> None:
    """The fire at 15 s opens a confirmed fire; every tier is notified via the inbox,
    which the live view shows; Ctrl-C-equivalent (duration) stops it cleanly."""
    state = tmp_path / "demo"
    done = sentinel("demo", "--duration", "40", "--state-dir", str(state),
                    "--broker", f"127.0.0.1:{mosquitto.port}", timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "本地收件箱" in out and "确认火情" in out
    # The board's one-time login link, the health endpoints and how to follow along.
    assert re.search(r"一屏可视看板 .*: http://127\.0\.0\.1:\d+/board/login/\S+", out), out
    assert "/metrics" in out and f"SENTINEL_STATE_DIR={state}" in out
    shown = [line for line in out.splitlines() if line.startswith("📨")]
    inbox = [json.loads(line) for line in (state / "inbox.jsonl").read_text().splitlines()]
    assert len(shown) == len(inbox) > 0
    fire = [m for m in inbox if "确认火情" in m["title"] or "confirmed fire" in m["title"]]
    # The fire pages every tier: grid worker, property, duty officer, street office, fire
    # liaison (who reads English).
    assert {m["contact"].split("-")[0] for m in fire} == {"gw", "pm", "do", "so", "fl"}
    assert "已停止" in out
