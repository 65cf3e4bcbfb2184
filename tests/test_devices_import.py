"""`sentinel devices import`: inventory rows from what Zigbee2MQTT and Home Assistant MQTT
discovery announce, guessed by pure functions and read from a real mosquitto holding the
retained messages (written from the documentation: tests/data/README.md)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.config.discovery import (
    COLUMNS,
    Candidate,
    Note,
    Place,
    device_id,
    discovery_entities,
    expose_properties,
    homeassistant_candidates,
    inventory_csv,
    parse_broker,
    zigbee2mqtt_candidates,
)
from sentinel.config.inventory import load_inventory

from helpers import ROOT, sentinel
from servers import Mosquitto, free_port

DATA = Path(__file__).resolve().parent / "data"
Z2M_DEVICES = (DATA / "z2m_bridge_devices.json").read_bytes()
HA_MESSAGES: list[tuple[str, bytes]] = [
    (m["topic"], m["payload"].encode() if isinstance(m["payload"], str)
     else json.dumps(m["payload"], ensure_ascii=False).encode())
    for m in json.loads((DATA / "ha_discovery.json").read_text(encoding="utf-8"))["messages"]]

SMOKE_SLASHES, SMOKE_VALID_ID, SMOKE_TUYA, GAS = (
    "0x0015bc001e0a3f21", "SB-SMK-0201", "0xa4c138d0f2e5b6a1", "0x0015bc0031c2d908")


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# -- Zigbee2MQTT: pure ----------------------------------------------------------------------

def test_zigbee2mqtt_rows_from_the_documented_device_list() -> None:
    """Smoke and gas detectors become rows (id, kind, profile, alias); the coordinator does not."""
    found = zigbee2mqtt_candidates(Z2M_DEVICES)
    rows = {c.id: (c.kind, c.profile, c.aliases) for c in found.candidates}
    assert rows == {
        SMOKE_SLASHES: ("smoke", "zigbee2mqtt", ("1栋/3楼/烟感",)),
        SMOKE_VALID_ID: ("smoke", "zigbee2mqtt", ()),
        SMOKE_TUYA: ("smoke", "zigbee2mqtt", ("Smoke RIGHT",)),
        GAS: ("gas", "zigbee2mqtt", ("Kitchen gas",)),
    }
    everything = json.dumps([c.why.values for c in found.candidates] +
                            [n.values for n in found.notes], ensure_ascii=False)
    assert "0x00124b00120144ae" not in everything  # the coordinator: no row, no note
    why = next(c.why for c in found.candidates if c.id == GAS)
    assert why.key == "z2m_row" and why.values["property"] == "gas"
    assert why.values["model"] == "HEIMAN HS1CG-E_3.0 Combustible gas sensor"


def test_zigbee2mqtt_says_why_a_device_is_not_imported() -> None:
    """Water leak and a plug (no kind), an unsupported model, an unfinished interview: notes."""
    notes = {n.values["name"]: n for n in zigbee2mqtt_candidates(Z2M_DEVICES).notes}
    assert set(notes) == {"0x00158d0002c7e9a1", "my_plug (0x00158d00018255df)",
                          "my_sensor (0x00169a00022256da)", "0x0015bc001e0a5c33"}
    leak = notes["0x00158d0002c7e9a1"]
    # The device's own capabilities are named, not the battery and radio every device has.
    assert (leak.key, leak.values["exposes"]) == ("unsupported", "water_leak, temperature")
    assert notes["my_plug (0x00158d00018255df)"].values["exposes"] == "state, power"
    assert notes["my_sensor (0x00169a00022256da)"].key == "no_definition"
    assert notes["0x0015bc001e0a5c33"].key == "interview"


def test_disabled_devices_are_noted_not_imported() -> None:
    """A device disabled in Zigbee2MQTT gets a note, even when it is a smoke detector."""
    smoke = next(d for d in json.loads(Z2M_DEVICES) if d["friendly_name"] == SMOKE_VALID_ID)
    found = zigbee2mqtt_candidates(json.dumps([{**smoke, "disabled": True}]))
    assert found.candidates == []
    assert [n.key for n in found.notes] == ["disabled"]


def test_expose_properties_walk_nested_features() -> None:
    """Properties of generic exposes and of a specific expose's features, once each, in order."""
    exposes = [
        {"type": "light", "features": [
            {"type": "binary", "name": "state", "property": "state", "access": 7},
            {"type": "composite", "name": "color_xy", "property": "color", "features": [
                {"type": "numeric", "name": "x", "property": "x", "access": 7}]}]},
        {"type": "binary", "name": "smoke", "property": "smoke", "access": 1},
        {"type": "binary", "name": "state", "property": "state", "access": 7},
        "not an expose",
    ]
    assert expose_properties(exposes) == ["state", "x", "smoke"]
    assert expose_properties(None) == []


def test_device_id_takes_the_first_valid_name_else_an_ascii_slug() -> None:
    """A name valid as an inventory id is kept; otherwise the next; else a slug, else ""."""
    assert device_id("SB-SMK-0201", "0xabc") == "SB-SMK-0201"
    assert device_id("Smoke RIGHT", "0x00158d0002c7e9a1") == "0x00158d0002c7e9a1"
    assert device_id("1栋/3楼/烟感", "Kitchen gas") == "Kitchen-gas"
    assert device_id("烟感", "1栋/3") == ""
    assert len(device_id("x" * 100 + " y")) == 64


def test_generated_ids_are_unique_in_the_output() -> None:
    """Two devices whose names give the same id get distinct ids (x, x-2)."""
    messages = [(f"homeassistant/binary_sensor/g{n}/config", json.dumps(
        {"device_class": "gas", "state_topic": f"g/{n}",
         "device": {"identifiers": [f"燃气{n}"], "name": name}}).encode())
        for n, name in enumerate(("Kitchen gas", "Kitchen/gas"))]
    found = homeassistant_candidates(messages)
    assert [c.id for c in found.candidates] == ["Kitchen-gas", "Kitchen-gas-2"]


@pytest.mark.parametrize("payload", [b"{not json", b'{"devices": []}', b"\xff"])
def test_zigbee2mqtt_refuses_what_is_not_a_device_list(payload: bytes) -> None:
    """A payload that is not a JSON list of devices is a ValueError (the CLI says so)."""
    with pytest.raises(ValueError, match="JSON"):
        zigbee2mqtt_candidates(payload)


# -- Home Assistant discovery: pure ---------------------------------------------------------

def test_homeassistant_rows_one_per_device() -> None:
    """Smoke, gas, CO (as gas) and water pressure in kPa become rows; entities of one device,
    one row; Zigbee2MQTT's announcements get its profile and the friendly name as alias."""
    found = homeassistant_candidates(HA_MESSAGES)
    rows = {c.id: (c.kind, c.profile, c.aliases) for c in found.candidates}
    assert rows == {
        SMOKE_SLASHES: ("smoke", "zigbee2mqtt", ("1栋/3楼/烟感",)),
        "kitchen-gas-01": ("gas", "", ()),
        "pump-room": ("hydrant_pressure", "", ()),
        "co-alarm-7": ("gas", "", ()),
    }
    states = {c.id: c.why.values["state_topic"] for c in found.candidates}
    # `~` expanded in the abbreviated stat_t; device discovery's shared state topic.
    assert states["kitchen-gas-01"] == "home/kitchen/gas/state"
    assert states["co-alarm-7"] == "acme/co-alarm-7/state"
    assert {c.why.key for c in found.candidates if not c.profile} == {"ha_row_no_profile"}


def test_homeassistant_says_why_a_device_is_not_imported() -> None:
    """Motion, water leak and a gas *meter* match no kind; hPa is air pressure; bad JSON."""
    notes = {(n.key, n.values.get("name") or n.values.get("topic")): n
             for n in homeassistant_candidates(HA_MESSAGES).notes}
    assert set(notes) == {("ha_unsupported", "garden"), ("ha_unsupported", "Gas meter"),
                          ("ha_unsupported", "Basement leak"),
                          ("air_pressure", "Rooftop weather"),
                          ("bad_discovery", "homeassistant/sensor/broken/config")}
    assert notes[("ha_unsupported", "Gas meter")].values["entities"] == "sensor:gas"
    assert notes[("air_pressure", "Rooftop weather")].values["unit"] == "hPa"


def test_discovery_topics_and_payloads() -> None:
    """Node ids and other prefixes are understood; an empty payload (removed) announces
    nothing; a topic that is not a discovery topic is refused."""
    config = b'{"device_class": "smoke", "state_topic": "s"}'
    assert discovery_entities("ha/binary_sensor/node/obj/config", config, "ha")[0][
        "component"] == "binary_sensor"
    assert discovery_entities("homeassistant/binary_sensor/obj/config", b"") == []
    for topic in ("homeassistant/binary_sensor/config", "homeassistant/a/b/c/d/config",
                  "other/binary_sensor/obj/config", "homeassistant/binary_sensor/obj/state"):
        with pytest.raises(ValueError, match="not a discovery topic"):
            discovery_entities(topic, config)
    with pytest.raises(ValueError, match="without components"):
        discovery_entities("homeassistant/device/x/config", b'{"dev": {"ids": "x"}}')


# -- output and options ---------------------------------------------------------------------

def test_rows_are_inventory_csv_that_the_inventory_loads(tmp_path: Path) -> None:
    """The CSV has the inventory's columns (aliases joined by |); with the place filled in,
    the inventory loader takes every row."""
    found = zigbee2mqtt_candidates(Z2M_DEVICES)
    text = inventory_csv(found.candidates, Place("水贝社区", "水贝花园", "1栋", "SB-G01"))
    assert text.splitlines()[0] == ",".join(COLUMNS)
    rows = rows_of(text)
    assert rows[0]["aliases"] == "1栋/3楼/烟感" and rows[0]["grid"] == "SB-G01"
    two = inventory_csv([Candidate("x", "smoke", "p", ("a b", "1栋/烟感"), Note("z2m_row"))])
    assert rows_of(two)[0]["aliases"] == "a b|1栋/烟感"
    path = tmp_path / "imported.csv"
    path.write_text(text, encoding="utf-8")
    inventory, problems = load_inventory([path])
    assert problems == []
    assert inventory[SMOKE_SLASHES].aliases == ("1栋/3楼/烟感",)
    assert inventory[SMOKE_SLASHES].kind == "smoke" and inventory[GAS].compound == "水贝花园"


@pytest.mark.parametrize(("text", "expected"), [
    ("mqtt://127.0.0.1:1884", ("127.0.0.1", 1884, None, None, False)),
    ("broker.local", ("broker.local", 1883, None, None, False)),
    ("mqtts://u%40x:p%3Aw@[::1]", ("::1", 8883, "u@x", "p:w", True)),
    ("tcp://h:1", ("h", 1, None, None, False)),
])
def test_parse_broker(text: str, expected: tuple[object, ...]) -> None:
    """mqtt:// and mqtts:// URLs with an optional account; plain host[:port]."""
    b = parse_broker(text)
    assert (b.host, b.port, b.username, b.password, b.tls is not None) == expected


@pytest.mark.parametrize("text", ["http://h", "mqtt://", "mqtt://h:port", "mqtt://h/x"])
def test_parse_broker_refuses_what_is_not_a_broker(text: str) -> None:
    """Other schemes, no host, a bad port or a path are refused."""
    with pytest.raises(ValueError, match=r"\S"):
        parse_broker(text)


# -- against a real broker ------------------------------------------------------------------

def publish_retained(broker: Mosquitto, messages: Iterable[tuple[str, bytes]],
                     user: tuple[str, str] | None = None) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-bridge")
    if user is not None:
        client.username_pw_set(*user)
    client.connect(broker.host, broker.port)
    client.loop_start()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def import_devices(*args: str, env: dict[str, str] | None = None
                   ) -> subprocess.CompletedProcess[str]:
    return sentinel("devices", "import", *args, env=env, timeout=60)


def test_import_zigbee2mqtt_from_a_real_broker(mosquitto: Mosquitto) -> None:
    """The retained bridge/devices message → CSV rows on stdout, notes on stderr, exit 0."""
    publish_retained(mosquitto, [("zigbee2mqtt/bridge/devices", Z2M_DEVICES)])
    result = import_devices("zigbee2mqtt", "--broker", f"mqtt://127.0.0.1:{mosquitto.port}",
                            "--lang", "en", "--community", "水贝社区", "--compound", "水贝花园",
                            "--grid", "SB-G01")
    assert result.returncode == 0, result.stderr
    rows = {r["id"]: r for r in rows_of(result.stdout)}
    assert set(rows) == {SMOKE_SLASHES, SMOKE_VALID_ID, SMOKE_TUYA, GAS}
    assert rows[SMOKE_SLASHES] == {
        "id": SMOKE_SLASHES, "kind": "smoke", "community": "水贝社区", "compound": "水贝花园",
        "building": "", "floor": "", "unit": "", "grid": "SB-G01", "location": "",
        "profile": "zigbee2mqtt", "aliases": "1栋/3楼/烟感"}
    assert rows[GAS]["kind"] == "gas" and rows[GAS]["aliases"] == "Kitchen gas"
    err = result.stderr
    assert f"{GAS}: guessed gas (exposes gas); HEIMAN HS1CG-E_3.0" in err
    assert ("not imported: 0x00158d0002c7e9a1, Xiaomi SJCGQ11LM Aqara water leak sensor, "
            "exposes water_leak, temperature, which match no sentinel kind") in err
    assert "4 row(s) to review (on stdout), 4 note(s)" in err
    assert "0x00124b00120144ae" not in result.stdout + err  # the coordinator


def test_import_speaks_chinese_by_default_and_takes_another_base(mosquitto: Mosquitto) -> None:
    """--base names another bridge's topics; notes are in Chinese unless --lang en."""
    publish_retained(mosquitto, [("site-a/z2m/bridge/devices", Z2M_DEVICES)])
    result = import_devices("zigbee2mqtt", "--broker", f"127.0.0.1:{mosquitto.port}",
                            "--base", "site-a/z2m")
    assert result.returncode == 0, result.stderr
    assert len(rows_of(result.stdout)) == 4
    assert f"{SMOKE_TUYA}: 猜测为烟感 (暴露 smoke)" in result.stderr
    assert "未导入 my_sensor (0x00169a00022256da): Zigbee2MQTT 不认识该型号" in result.stderr


def test_import_homeassistant_from_a_real_broker(mosquitto: Mosquitto) -> None:
    """Retained discovery messages (with and without node id, device discovery) → rows."""
    publish_retained(mosquitto, HA_MESSAGES)
    result = import_devices("homeassistant", "--broker", f"mqtt://127.0.0.1:{mosquitto.port}",
                            "--lang", "en")
    assert result.returncode == 0, result.stderr
    rows = {r["id"]: (r["kind"], r["profile"], r["aliases"]) for r in rows_of(result.stdout)}
    assert rows == {SMOKE_SLASHES: ("smoke", "zigbee2mqtt", "1栋/3楼/烟感"),
                    "kitchen-gas-01": ("gas", "", ""), "pump-room": ("hydrant_pressure", "", ""),
                    "co-alarm-7": ("gas", "", "")}
    assert ("co-alarm-7: guessed gas (device_class carbon_monoxide); Acme CO-7. No known "
            "profile for its state topic acme/co-alarm-7/state") in result.stderr
    assert "Rooftop weather, -, reports pressure in hPa" in result.stderr


def test_nothing_retained_exits_1_after_the_timeout(mosquitto: Mosquitto) -> None:
    """No bridge on the broker: exit 1 after --timeout, saying where it looked."""
    started = time.monotonic()
    result = import_devices("zigbee2mqtt", "--broker", f"mqtt://127.0.0.1:{mosquitto.port}",
                            "--timeout", "1s", "--lang", "en")
    assert result.returncode == 1
    assert result.stdout == ""
    assert (f"no retained message on zigbee2mqtt/bridge/devices at "
            f"mqtt://127.0.0.1:{mosquitto.port} within 1 s") in result.stderr
    assert time.monotonic() - started < 20
    zh = import_devices("homeassistant", "--broker", f"mqtt://127.0.0.1:{mosquitto.port}",
                        "--timeout", "1")
    assert zh.returncode == 1 and "1 秒内未在" in zh.stderr


def test_a_broker_that_is_not_there_exits_1() -> None:
    """Connection refused: exit 1 with the broker's address; a bad address or timeout too."""
    port = free_port()
    result = import_devices("zigbee2mqtt", "--broker", f"mqtt://127.0.0.1:{port}", "--lang",
                            "en")
    assert result.returncode == 1
    assert f"cannot read from the MQTT broker at mqtt://127.0.0.1:{port}" in result.stderr
    bad = import_devices("zigbee2mqtt", "--broker", "http://x", "--lang", "en")
    assert bad.returncode == 1 and "cannot read the broker address" in bad.stderr
    bad = import_devices("zigbee2mqtt", "--timeout", "soon", "--lang", "en")
    assert bad.returncode == 1 and "cannot read the timeout 'soon'" in bad.stderr


def test_address_from_the_configuration_account_of_its_own(tmp_path: Path) -> None:
    """Without --broker, [mqtt] host and port of -c are used, but never the daemon's account
    (a broker taking user names as client ids would throw the daemon off): --user and
    --password-file give one; a wrong password is refused and said so, not echoed."""
    passwd = tmp_path / "passwd"
    for flags, user, password in ((["-c"], "bridge", "b-secret"), ([], "installer", "i-secret"),
                                  ([], "daemon", "d-secret")):
        done = subprocess.run(["mosquitto_passwd", *flags, "-b", str(passwd), user, password],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    with Mosquitto(tmp_path / "broker", extra_config=[
            "allow_anonymous false", f"password_file {passwd}"]) as broker:
        publish_retained(broker, [("zigbee2mqtt/bridge/devices", Z2M_DEVICES)],
                         user=("bridge", "b-secret"))
        (tmp_path / "daemon.secret").write_text("d-secret\n")
        config = tmp_path / "sentinel.toml"
        config.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
                          'username = "daemon"\npassword_file = "daemon.secret"\n')
        secret = tmp_path / "installer.secret"
        secret.write_text("i-secret\n")
        result = import_devices("zigbee2mqtt", "-c", str(config), "--user", "installer",
                                "--password-file", str(secret), "--lang", "en")
        assert result.returncode == 0, result.stderr
        assert len(rows_of(result.stdout)) == 4
        refused = f"cannot read from the MQTT broker at mqtt://127.0.0.1:{broker.port}: " \
                  "Not authorized"
        anonymous = import_devices("zigbee2mqtt", "-c", str(config), "--lang", "en")
        assert anonymous.returncode == 1 and refused in anonymous.stderr
        secret.write_text("wrong-password\n")
        wrong = import_devices("zigbee2mqtt", "-c", str(config), "--user", "installer",
                               "--password-file", str(secret), "--lang", "en")
        assert wrong.returncode == 1 and refused in wrong.stderr
        assert "wrong-password" not in wrong.stderr


def test_tls_trusts_the_ca_of_the_configuration(tmp_path: Path) -> None:
    """A TLS broker: [mqtt.tls] of -c gives TLS and the CA to trust, with or without an
    mqtts:// --broker; a broker whose CA is not trusted is refused."""
    certs = tmp_path / "certs"
    done = subprocess.run(["bash", str(ROOT / "config" / "mosquitto" / "make-certs.sh"),
                           str(certs), "127.0.0.1", "localhost"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with Mosquitto(tmp_path / "broker", extra_config=[
            f"certfile {certs / 'server.crt'}", f"keyfile {certs / 'server.key'}"]) as broker:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-bridge")
        client.tls_set(ca_certs=str(certs / "ca.crt"))
        client.connect(broker.host, broker.port)
        client.loop_start()
        client.publish("zigbee2mqtt/bridge/devices", Z2M_DEVICES, qos=1,
                       retain=True).wait_for_publish(10)
        client.loop_stop()
        client.disconnect()
        config = tmp_path / "sentinel.toml"
        config.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
                          f'[mqtt.tls]\nenabled = true\nca_file = "{certs / "ca.crt"}"\n')
        for extra in ((), ("--broker", f"mqtts://127.0.0.1:{broker.port}")):
            result = import_devices("zigbee2mqtt", "-c", str(config), *extra, "--lang", "en")
            assert result.returncode == 0, result.stderr
            assert len(rows_of(result.stdout)) == 4
        config.write_text("")  # no CA of its own: the system's do not know this one
        untrusted = import_devices("zigbee2mqtt", "-c", str(config), "--broker",
                                   f"mqtts://127.0.0.1:{broker.port}", "--lang", "en")
        assert untrusted.returncode == 1
        assert "certificate verify failed" in untrusted.stderr
