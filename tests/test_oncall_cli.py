"""`sentinel oncall` and what `sentinel check` finds in the on-call and policy files."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sentinel.escalation.model import Role
from sentinel.escalation.roster import Rosters

from daemon import LOADED
from helpers import copy_deployment, sentinel

TZ = ZoneInfo("Asia/Shanghai")


def test_oncall_lists_who_is_on_duty_at_a_given_time() -> None:
    """Every grid has its worker; the leave override in the shipped roster is honoured."""
    at = datetime(2026, 12, 22, 3, 0, tzinfo=TZ)  # inside gw-01's annual leave
    done = sentinel("oncall", "--at", "2026-12-22T03:00", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    grids = {r["area"]: [c["id"] for c in r["contacts"]] for r in rows
             if r["role"] == "grid_worker"}
    assert len(grids) == 15 and all(grids.values())
    rosters = Rosters(LOADED.oncall)
    place = {"grid": "SB-G01", "compound": "水贝花园"}
    expected = [c.id for c in rosters.on_duty(Role.GRID_WORKER, place, at.timestamp())]
    assert grids["grid SB-G01"] == expected == ["gw-02"]
    zh = sentinel("oncall", "--at", "2026-12-22T03:00")
    assert zh.returncode == 0 and "网格员" in zh.stdout and "社区值班" in zh.stdout
    en = sentinel("oncall", "--at", "2026-12-22T03:00", "--lang", "en")
    assert "grid worker" in en.stdout and "community duty officer" in en.stdout


def test_oncall_shows_contact_ids_and_all_lists_everyone() -> None:
    """The ids `assign`, `board --person` and `--actor` take are in the human output; --all
    lists every contact, on duty or not (吴敏 gw-09 is off at night), with roles and areas."""
    night = sentinel("oncall", "--at", "2026-12-22T03:00")
    assert night.returncode == 0, night.stderr
    assert "李建国 (gw-02, 13807550002)" in night.stdout and "gw-09" not in night.stdout
    everyone = sentinel("oncall", "--all", "--at", "2026-12-22T03:00")
    assert everyone.returncode == 0, everyone.stderr
    rows = {line.split(" | ")[0]: line for line in everyone.stdout.splitlines()[1:]}
    assert set(rows) == {c.id for c in LOADED.oncall.contact}
    assert rows["gw-09"].startswith("gw-09 | 吴敏 | 网格员 | 网格 SB-G") and \
        rows["gw-09"].endswith("| 不在班")
    assert rows["gw-02"].endswith("| 值班中")
    listed = [json.loads(line) for line in sentinel(
        "oncall", "--all", "--json", "--at", "2026-12-22T03:00").stdout.splitlines()]
    gw09 = next(c for c in listed if c["id"] == "gw-09")
    assert gw09["name"] == "吴敏" and gw09["on_duty"] is False and gw09["roles"] == [
        "grid_worker"] and all(a.startswith("grid ") for a in gw09["areas"])


def test_check_reports_coverage_gaps_as_warnings_and_strict_fails(tmp_path: Path) -> None:
    """A grid team that only works days leaves its grids uncovered at night."""
    config = copy_deployment(tmp_path)
    oncall = config.parent / "oncall.toml"
    text = oncall.read_text(encoding="utf-8")
    # Drop the first team's night shift.
    night = ('[[roster.shift]]                # night on-call: the other one\n'
             'days = "daily"\nstart = "20:00"\nend = "08:00"\nmembers = ["gw-02", "gw-01"]\n'
             'rotation = "daily"\nrotation_start = "2026-01-05"\n')
    assert night in text
    oncall.write_text(text.replace(night, "", 1), encoding="utf-8")
    done = sentinel("check", "-c", str(config), "--lang", "en")
    assert done.returncode == 0, done.stderr
    gaps = [line for line in done.stdout.splitlines() if "nobody on duty" in line]
    assert {g.split(": ")[1] for g in gaps} == {"grid_worker grid SB-G01",
                                                "grid_worker grid SB-G02",
                                                "grid_worker grid SB-G03"}
    # Every night of the week (the one running into Monday shows at both ends of the week).
    assert all(g.endswith(("08:00", "Mon 00:00")) for g in gaps) and len(gaps) == 3 * 8
    assert sentinel("check", "-c", str(config), "--strict").returncode == 1
    # In Chinese, in words: role, area, weekday (no grid_worker, no "grid SB-G01").
    zh = sentinel("check", "-c", str(config)).stdout
    assert "值班缺口: 网格员 | 网格 SB-G01: 周一 20:00 至 周二 08:00 无人值班" in zh, zh
    assert "grid_worker" not in zh and "nobody" not in zh


def test_check_refuses_bad_channels_and_unknown_names_without_echoing_secrets(
        tmp_path: Path) -> None:
    """An invalid channel URL, an unknown grid and a policy for an incident no rule raises
    are each reported with file and entry; the URL (which may hold a key) is not printed."""
    config = copy_deployment(tmp_path)
    oncall = config.parent / "oncall.toml"
    text = oncall.read_text(encoding="utf-8")
    secret = "nosuchscheme://s3cr3t-key-123@host"
    text = text.replace('channels = ["wecombot://', f'channels = ["{secret}", "wecombot://', 1)
    text = text.replace('grids = ["SB-G01"', 'grids = ["SB-G99"', 1)
    oncall.write_text(text, encoding="utf-8")
    policies = config.parent / "escalation.toml"
    policies.write_text(policies.read_text(encoding="utf-8").replace(
        '"smoke_alarm", "gas_leak"', '"smoke_alarm", "gas_leek"'), encoding="utf-8")
    done = sentinel("check", "-c", str(config))
    assert done.returncode == 2
    assert "contact gw-01: channel 1 (nosuchscheme://…) is not a valid apprise URL" in \
        done.stderr
    assert "unknown grid 'SB-G99'" in done.stderr
    assert "policy smoke_gas: no rule raises incident 'gas_leek'" in done.stderr
    assert "s3cr3t" not in done.stderr + done.stdout


def test_check_names_a_missing_oncall_file(tmp_path: Path) -> None:
    """No on-call file: an error naming it, not a daemon that pages nobody."""
    config = copy_deployment(tmp_path)
    shutil.move(config.parent / "oncall.toml", tmp_path / "elsewhere.toml")
    done = sentinel("check", "-c", str(config))
    assert done.returncode == 2 and "oncall.toml: file not found" in done.stderr
