"""district.toml's checks as a person reads them: where a problem is, in words.

`sentinel district --check` prints these problems (like `sentinel check`, in English
under the header of the person's language: the box's problem lines are English too).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.district.config import key_file_warnings, load_district_settings
from sentinel.errors import ConfigError

from helpers import ROOT

KEY = "a-command-key-of-at-least-16-bytes"


def district_file(tmp_path: Path, communities: list[str]) -> Path:
    lines = ['state_dir = "state"']
    for cid in communities:
        lines += ["[[community]]", f'id = "{cid}"', f'command_key = "{KEY}"', ""]
    path = tmp_path / "district.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_district_settings(path, environ if environ is not None else {})
    return [str(p) for p in caught.value.problems]


def test_a_duplicate_community_id_is_reported_in_the_file_not_the_environment(
        tmp_path: Path) -> None:
    """With any SENTINEL_* variable set (as on every real machine), a whole-file problem
    was blamed on "environment variable SENTINEL_"."""
    path = district_file(tmp_path, ["shuibei", "tianbei", "shuibei"])
    found = problems(path, {"SENTINEL_LANG": "zh", "SENTINEL_LOG__LEVEL": "info"})
    assert len(found) == 1, found
    [line] = found
    assert line.startswith(f"{path}: community: ")
    assert "duplicate community id: 'shuibei' in entries 1, 3" in line
    assert "environment" not in line


def test_a_community_id_that_is_no_topic_level_is_said_in_words(tmp_path: Path) -> None:
    path = district_file(tmp_path, ["水贝"])
    [line] = problems(path)
    assert line.startswith(f"{path}: community.0.id: ")
    assert "'水贝' is not usable as a topic level" in line and "ASCII" in line
    assert "`name`" in line and "pattern" not in line and "^[" not in line


def test_key_files_readable_by_others_are_warned_about(tmp_path: Path) -> None:
    key = tmp_path / "shuibei.key"
    key.write_text(KEY + "\n", encoding="utf-8")
    path = tmp_path / "district.toml"
    path.write_text('state_dir = "state"\n[[community]]\nid = "shuibei"\n'
                    'command_key_file = "shuibei.key"\n', encoding="utf-8")
    key.chmod(0o644)
    settings = load_district_settings(path, {})
    [warning] = key_file_warnings(settings)
    assert "mode 0644" in str(warning) and "chmod 600" in str(warning)
    assert "community shuibei" in str(warning)
    key.chmod(0o600)
    assert key_file_warnings(settings) == []


def test_the_shipped_district_files_check_without_warnings() -> None:
    """`sentinel district --check` on the shipped district.toml: the shipped escalation
    climbs only to roles the shipped on-call has (no "no contact has this role")."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("SENTINEL_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "sentinel", "district", "--check", "-c",
                           str(ROOT / "config" / "district.toml")],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "no contact has this role" not in done.stdout + done.stderr
