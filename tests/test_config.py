"""Configuration loading, environment overrides and `sentinel check`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sentinel.config.inventory import load_inventory
from sentinel.config.load import load_settings
from sentinel.errors import ConfigError
from sentinel.loading import load_all

from helpers import SHIPPED_CONFIG, copy_deployment, sentinel


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env.update(extra)
    return env


def test_shipped_config_checks_clean() -> None:
    """`sentinel check` accepts the shipped config, inventory and profiles."""
    result = sentinel("check", "-c", str(SHIPPED_CONFIG), "--lang", "en", env=_clean_env())
    assert result.returncode == 0, result.stderr
    assert "1005 devices" in result.stdout


def test_check_reports_every_planted_error(tmp_path: Path) -> None:
    """Unknown key, duplicate id and a missing profile are all reported, exit non-zero."""
    config = copy_deployment(tmp_path)
    text = config.read_text().replace("[ingest]\n", "[ingest]\nmax_payload_kib = 64\n")
    config.write_text(text)
    inventory = tmp_path / "devices" / "shuibei.csv"
    lines = inventory.read_text(encoding="utf-8").splitlines()
    lines.append(lines[1])                                    # duplicate of the first device
    lines.append(lines[2].replace("SB-SMK-0002", "SB-SMK-9999").replace(
        "sentinel-json", "acme-smoke-v9"))                    # profile that does not exist
    inventory.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = sentinel("check", "-c", str(config), "--lang", "en", env=_clean_env())

    assert result.returncode != 0
    err = result.stderr
    assert "3 problem(s)" in err, err
    assert "ingest.max_payload_kib: unknown key" in err
    assert "duplicate device id 'SB-SMK-0001'" in err
    assert "profile 'acme-smoke-v9' does not exist" in err
    assert "shuibei.csv" in err and "sentinel.toml" in err


def test_check_speaks_chinese_by_default(tmp_path: Path) -> None:
    """Without --lang the CLI answers in Simplified Chinese."""
    result = sentinel("check", "-c", str(SHIPPED_CONFIG), env=_clean_env())
    assert result.returncode == 0
    assert "配置有效" in result.stdout


def test_environment_overrides_settings(tmp_path: Path) -> None:
    """SENTINEL_<SECTION>__<KEY> variables override the file, nested and top-level."""
    env = {
        "SENTINEL_MQTT__PORT": "1884",
        "SENTINEL_STORE__BACKEND": "influxdb",
        "SENTINEL_STORE__INFLUXDB__URL": "http://127.0.0.1:8428",
        "SENTINEL_STATE_DIR": str(tmp_path / "state"),
        "SENTINEL_MQTT__TOPICS": '["a/#", "b/+"]',
    }
    settings = load_settings(SHIPPED_CONFIG, env)
    assert settings.mqtt.port == 1884
    assert settings.store.backend == "influxdb"
    assert settings.store.influxdb.url == "http://127.0.0.1:8428"
    assert settings.state_dir == tmp_path / "state"
    assert settings.store.sqlite.path == tmp_path / "state" / "readings.sqlite3"
    assert settings.mqtt.topics == ["a/#", "b/+"]


def test_unknown_environment_key_names_the_variable() -> None:
    """A mistyped override is an error that names the environment variable."""
    with pytest.raises(ConfigError) as info:
        load_settings(SHIPPED_CONFIG, {"SENTINEL_MQTT__PROT": "1"})
    assert "environment variable SENTINEL_MQTT__PROT" in str(info.value)


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    """A secret given twice, or in a wrongly typed key, is reported without its value."""
    secret = "hunter2-very-secret"
    (tmp_path / "pw").write_text(secret)
    env = {"SENTINEL_MQTT__PASSWORD": secret, "SENTINEL_MQTT__PASSWORD_FILE": str(tmp_path / "pw"),
           "SENTINEL_MQTT__PORT": secret}
    with pytest.raises(ConfigError) as info:
        load_settings(SHIPPED_CONFIG, env)
    assert secret not in str(info.value)
    assert "mqtt.port" in str(info.value)
    result = sentinel("check", "-c", str(SHIPPED_CONFIG), env=_clean_env(**env))
    assert result.returncode != 0
    assert secret not in result.stderr + result.stdout


def test_inventory_loads_from_yaml_and_toml(tmp_path: Path) -> None:
    """YAML and TOML inventories describe the same devices as CSV rows."""
    (tmp_path / "a.yaml").write_text(
        "devices:\n"
        "  - {id: T-1, kind: water_level, community: c, compound: x, grid: g,\n"
        "     profile: lorawan-tts, settings: {mount_height_m: 4.5, tank_height_m: 4.0}}\n")
    (tmp_path / "b.toml").write_text(
        '[[devices]]\nid = "S-1"\nkind = "smoke"\ncommunity = "c"\ncompound = "x"\n'
        'grid = "g"\nprofile = "sentinel-json"\nbuilding = "3栋"\n')
    inventory, problems = load_inventory([tmp_path / "a.yaml", tmp_path / "b.toml"])
    assert problems == []
    assert inventory["T-1"].settings.mount_height_m == 4.5
    assert inventory["S-1"].building == "3栋"


def test_inventory_rejects_bad_rows_with_place(tmp_path: Path) -> None:
    """Each bad CSV row is reported with its line and id; good rows still load."""
    csv = tmp_path / "inv.csv"
    csv.write_text(
        "id,kind,community,compound,building,floor,unit,grid,location,profile\n"
        "OK-1,smoke,c,x,1栋,1,101,g,,sentinel-json\n"
        "bad id!,smoke,c,x,1栋,1,101,g,,sentinel-json\n"
        "OK-2,smoke,c,x,1栋,1,101,,,sentinel-json\n", encoding="utf-8")
    inventory, problems = load_inventory([csv])
    assert list(inventory) == ["OK-1"]
    text = "\n".join(map(str, problems))
    assert "line 3" in text and "id" in text
    assert "line 4 (id OK-2)" in text and "grid" in text


def test_unknown_kind_and_wrong_profile_kind_are_check_errors(tmp_path: Path) -> None:
    """A device of an unknown kind, or on a profile that does not serve its kind, fails check."""
    config = copy_deployment(tmp_path)
    inventory = tmp_path / "devices" / "shuibei.csv"
    lines = inventory.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace(",smoke,", ",laser,")
    lines[2] = lines[2].replace("sentinel-json", "esphome")
    inventory.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_all(config, {})
    text = str(info.value)
    assert "unknown kind 'laser'" in text
    assert "profile 'esphome' does not serve kind 'smoke'" in text


def test_extra_kind_from_a_file_needs_no_code(tmp_path: Path) -> None:
    """A kind declared in a file (fire-lane occupancy) is usable by profiles and devices."""
    config = copy_deployment(tmp_path)
    kinds = tmp_path / "devices" / "kinds"
    kinds.mkdir()
    (kinds / "fire_lane.toml").write_text(
        'name = "fire_lane"\ndescription = "fire-lane occupancy"\n'
        '[fields.occupied]\ntype = "bool"\n'
        '[fields.occupied_seconds]\ntype = "number"\nunit = "s"\nmin = 0\n')
    text = config.read_text().replace("kind_dirs = []", 'kind_dirs = ["../devices/kinds"]')
    config.write_text(text)
    with (tmp_path / "devices" / "shuibei.csv").open("a", encoding="utf-8") as fh:
        fh.write("SB-FL-0001,fire_lane,水贝社区,水贝花园,1栋,,,SB-G01,1栋消防通道,"
                 "sentinel-json,,,\n")
    (tmp_path / "devices" / "profiles" / "lane.yaml").write_text(
        "name: lane-json\nmatch: ['lane/+']\ndevice_id: {topic_segment: 1}\n"
        "fields:\n  occupied: {path: occ}\n  occupied_seconds: {path: dur, unit: min}\n")
    loaded = load_all(config, {})
    assert "fire_lane" in loaded.kinds
    assert loaded.inventory["SB-FL-0001"].kind == "fire_lane"


def test_inventory_aliases_and_several_profiles(tmp_path: Path) -> None:
    """CSV cells hold several aliases and profiles separated by |, YAML and TOML lists; an
    alias that is another device's id or alias is a problem with the device's place."""
    (tmp_path / "a.csv").write_text(
        "id,kind,community,compound,grid,profile,aliases\n"
        "Z-1,smoke,c,x,g,zigbee2mqtt|zigbee2mqtt-action, Smoke RIGHT | 1栋/3楼/烟感 \n"
        "Z-2,smoke,c,x,g,zigbee2mqtt,Z-1\n"
        "Z-3,smoke,c,x,g,zigbee2mqtt,Smoke RIGHT\n"
        "Z-4,smoke,c,x,g,zigbee2mqtt,a||b\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text(
        "devices:\n"
        "  - {id: Y-1, kind: smoke, community: c, compound: x, grid: g,\n"
        "     profile: [zigbee2mqtt, zigbee2mqtt-action], aliases: [厨房 烟感]}\n",
        encoding="utf-8")
    (tmp_path / "c.toml").write_text(
        '[[devices]]\nid = "T-1"\nkind = "smoke"\ncommunity = "c"\ncompound = "x"\n'
        'grid = "g"\nprofile = "zigbee2mqtt"\naliases = ["客厅/烟感"]\n', encoding="utf-8")
    inventory, problems = load_inventory([tmp_path / "a.csv", tmp_path / "b.yaml",
                                          tmp_path / "c.toml"])
    z1 = inventory["Z-1"]
    assert z1.profile == "zigbee2mqtt" and z1.profiles == ("zigbee2mqtt", "zigbee2mqtt-action")
    assert z1.aliases == ("Smoke RIGHT", "1栋/3楼/烟感")
    assert inventory.by_alias("1栋/3楼/烟感") is z1 and inventory.by_alias("Smoke RIGHT") is z1
    assert inventory["Y-1"].profiles == ("zigbee2mqtt", "zigbee2mqtt-action")
    assert inventory.by_alias("客厅/烟感") is inventory["T-1"]
    text = "\n".join(map(str, problems))
    assert "line 3 (id Z-2)" in text and "alias 'Z-1' is the id of device Z-1" in text
    assert "line 4 (id Z-3)" in text and "also an alias of device Z-1" in text
    assert "line 5 (id Z-4)" in text and "empty alias" in text
    assert len(problems) == 3, text


def test_check_refuses_profiles_that_never_match(tmp_path: Path) -> None:
    """`sentinel check` lists paths that can never match, @key without a `*` in `each`,
    an exclude that excludes nothing, and a device naming a profile that does not exist
    among its several."""
    config = copy_deployment(tmp_path)
    (tmp_path / "devices" / "profiles" / "broken.yaml").write_text(
        "name: broken\nmatch: ['acme/+/up']\nexclude: ['other/#']\n"
        "device_id: {path: '@key'}\n"
        "fields:\n  alarm: {path: 'a[x=1][y=2]'}\n  battery: {path: 'b.*'}\n",
        encoding="utf-8")
    with (tmp_path / "devices" / "shuibei.csv").open("a", encoding="utf-8") as fh:
        fh.write("SB-X-0001,smoke,水贝社区,水贝花园,1栋,,,SB-G01,,"
                 "zigbee2mqtt|acme-v9,,,\n")
    result = sentinel("check", "-c", str(config), "--lang", "en", env=_clean_env())
    assert result.returncode != 0
    err = result.stderr
    assert "use a[x=1,y=2]" in err
    assert "a wildcard yields several values; use `each`" in err
    assert "@key needs `each` with a `*`" in err
    assert "'other/#' excludes no topic that `match` takes" in err
    assert "profile 'acme-v9' does not exist" in err
    assert "5 problem(s)" in err, err
