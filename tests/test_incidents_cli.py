"""Operator commands over the state database: incidents list/show, silences and drills."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sentinel.clock import FakeClock
from sentinel.config.check import load_all
from sentinel.config.model import RulesSettings
from sentinel.incidents.service import IncidentService
from sentinel.incidents.store import StateStore
from sentinel.types import Reading

from helpers import SHIPPED_CONFIG, sentinel

LOADED = load_all(SHIPPED_CONFIG, {})
SMOKE = next(d for d in LOADED.inventory.values() if d.kind == "smoke")


def env_for(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env["SENTINEL_STATE_DIR"] = str(state)
    return env


async def test_incidents_list_and_show(tmp_path: Path) -> None:
    """`incidents list` shows open incidents (zh by default); `show` the audit trail."""
    state = tmp_path / "state"
    async with StateStore(state / "incidents.sqlite3") as store:
        service = IncidentService(LOADED.rules, LOADED.inventory, store, FakeClock(),
                                  RulesSettings())
        await service.start()
        now = FakeClock().now()
        await service.process([Reading(SMOKE.id, "smoke", now, now, {"alarm": True})])
        inc = service.open_incidents()[0]
        await service.acknowledge(inc.id, "网格员", None)
    listed = sentinel("incidents", "list", env=env_for(state))
    assert listed.returncode == 0, listed.stderr
    assert inc.id in listed.stdout and "烟感报警" in listed.stdout and "严重" in listed.stdout
    english = sentinel("incidents", "list", "--lang", "en", env=env_for(state))
    assert "smoke alarm" in english.stdout and "critical" in english.stdout
    shown = sentinel("incidents", "show", inc.id, "--json", env=env_for(state))
    data = json.loads(shown.stdout)
    assert data["incident"]["device_id"] == SMOKE.id
    assert [e["type"] for e in data["events"]] == ["opened", "acknowledged"]
    assert data["events"][1]["actor"] == "网格员"
    missing = sentinel("incidents", "show", "nope", env=env_for(state))
    assert missing.returncode == 1 and "nope" in missing.stderr


def test_silence_add_list_remove(tmp_path: Path) -> None:
    """A silence needs a scope, author and reason; it lists until removed."""
    state = tmp_path / "state"
    env = env_for(state)
    no_scope = sentinel("silence", "add", "--for", "2h", "--author", "a", "--reason", "r",
                        env=env)
    assert no_scope.returncode == 1 and "--device" in no_scope.stderr
    added = sentinel("silence", "add", "--compound", "水贝花园", "--building", "1栋", "--for",
                     "2h", "--author", "物业王", "--reason", "消火栓冲洗", env=env)
    assert added.returncode == 0, added.stderr
    listed = json.loads(sentinel("silence", "list", "--json", env=env).stdout)
    assert listed["scope"] == {"building": "1栋", "compound": "水贝花园"}
    assert listed["author"] == "物业王" and listed["end"] - listed["start"] == 7200
    assert sentinel("drill", "list", "--json", env=env).stdout == ""
    removed = sentinel("silence", "remove", str(listed["id"]), "--author", "物业王", env=env)
    assert removed.returncode == 0
    assert sentinel("silence", "list", "--json", env=env).stdout == ""
