// Body of the "threshold" function node (bench/nodered.py puts it into flows.json).
// Output 1: one InfluxDB point per reading (to the join node and the influxdb batch node).
// Output 2: an alarm message for the mqtt out node, when the reading is an alarm.
//
// Reads the four device profiles of devices/profiles/*.yaml, as sentinel's decoder does:
//   sentinel/v1/<id>/telemetry    {"id","ts",...canonical fields, gas:{lel,...}, position:{...}}
//   zigbee2mqtt/<id>              {"last_seen", "smoke"|"gas", "battery", "voltage", ...}
//   v3/<app>/devices/<id>/up      TTS uplink: end_device_ids.device_id (upper-cased),
//                                 received_at (ISO 8601), uplink_message.decoded_payload
//   esphome/<id>/(binary_)sensor/<quantity>/state   a plain value ("0.352", "ON"), no time
// Device time: epoch ms (> 1e11) or s, or ISO 8601 with an offset (fraction rounded to the
// ms); no device time: the receive time. Unreadable, naive or missing ids: dropped.
// Alarms are stateless (no hysteresis, no `for`, no de-duplication): alarm, smoke, gas,
// sos or fall true; a TTS smoke_status of FIRE/ALARM/报警; gas above 25 %LEL; hydrant
// pressure below 0.10 MPa (TTS sends kPa, ESPHome bar: converted to MPa).
const parts = msg.topic.split("/");
const p = msg.payload;
const fields = { reading: 1 }; // every point has it: count_over_time(nodered_reading[...])
let device = null;
let ts = null;

function flatten(obj, prefix) {
    for (const k in obj) {
        const v = obj[k];
        const t = typeof v;
        if (t === "number") {
            if (Number.isFinite(v)) fields[prefix + k] = v;
        } else if (t === "boolean") {
            fields[prefix + k] = v;
        } else if (v !== null && t === "object" && !Array.isArray(v)) {
            flatten(v, prefix + k + "_");
        }
    }
}

const ISO = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:[.,](\d+))?(Z|[+-]\d{2}(?::?\d{2})?)$/i;

function isoMs(s) {
    const m = ISO.exec(s);
    if (m === null) return null; // not ISO, or naive (no offset): sentinel rejects it too
    let tz = m[4].toUpperCase();
    if (tz !== "Z") tz = tz.length === 3 ? tz + ":00" : tz.length === 5 ? tz.slice(0, 3) + ":" + tz.slice(3) : tz;
    const base = Date.parse(m[1] + "T" + m[2] + tz);
    if (!Number.isFinite(base)) return null;
    // Python's fromisoformat keeps microseconds; sentinel rounds to the millisecond.
    const us = m[3] ? Number((m[3] + "00000").slice(0, 6)) : 0;
    return base + Math.round(us / 1000);
}

function toMs(raw) {
    if (raw === undefined || raw === null) return Date.now(); // no device time
    let n;
    if (typeof raw === "number") {
        n = raw;
    } else if (typeof raw === "string") {
        const s = raw.trim();
        n = s === "" ? NaN : Number(s);
        if (Number.isNaN(n)) return isoMs(s);
    } else {
        return null;
    }
    if (!Number.isFinite(n) || n < 0) return null;
    return n > 1e11 ? Math.round(n) : Math.round(n * 1000);
}

if (parts[0] === "sentinel" && parts.length === 4 && parts[3] === "telemetry") {
    if (p === null || typeof p !== "object") return null;
    device = typeof p.id === "string" ? p.id : parts[2];
    if (device !== parts[2]) return null; // topic and body must name the same device
    ts = toMs(p.ts);
    flatten(p, "");
    delete fields.ts;
} else if (parts[0] === "zigbee2mqtt" && parts.length === 2) {
    if (p === null || typeof p !== "object") return null;
    device = parts[1];
    ts = toMs(p.last_seen);
    flatten(p, "");
    delete fields.last_seen;
} else if (parts[0] === "v3" && parts.length === 5 && parts[4] === "up") {
    if (p === null || typeof p !== "object") return null;
    const ids = p.end_device_ids;
    device = String((ids && ids.device_id) || parts[3]).toUpperCase();
    ts = toMs(p.received_at);
    const up = p.uplink_message || {};
    const dp = up.decoded_payload;
    if (dp !== null && typeof dp === "object") {
        flatten(dp, "");
        if (typeof dp.smoke_status === "string") {
            const s = dp.smoke_status.toUpperCase();
            fields.alarm = s === "FIRE" || s === "ALARM" || s === "报警";
        }
        if (typeof fields.pressure === "number") fields.pressure = fields.pressure / 1000; // kPa
    }
    const rx = Array.isArray(up.rx_metadata) ? up.rx_metadata[0] : null;
    if (rx) {
        if (typeof rx.rssi === "number") fields.rssi = rx.rssi;
        if (typeof rx.snr === "number") fields.snr = rx.snr;
    }
} else if (parts[0] === "esphome" && parts.length === 5 && parts[4] === "state") {
    device = parts[1];
    ts = Date.now();
    const raw = String(p).trim();
    let v = raw === "ON" ? true : raw === "OFF" ? false : Number(raw);
    if (typeof v === "number" && !Number.isFinite(v)) return null;
    let name = parts[3];
    if (name === "pipe_pressure" && typeof v === "number") {
        name = "pressure";
        v = v / 10; // bar
    }
    fields[name] = v;
} else {
    return null;
}
if (!device || ts === null) return null;

const reasons = [];
if (fields.alarm === true) reasons.push("alarm");
if (fields.smoke === true) reasons.push("smoke");
if (fields.gas === true) reasons.push("gas");
if (fields.sos === true) reasons.push("sos");
if (fields.fall === true) reasons.push("fall");
if (typeof fields.gas_lel === "number" && fields.gas_lel > 25) reasons.push("gas_lel");
if (typeof fields.pressure === "number" && fields.pressure < 0.1) reasons.push("pressure_low");

msg.payload = { measurement: "nodered", tags: { device: device }, fields: fields, timestamp: ts };
if (reasons.length === 0) return [msg, null];
const alarm = { payload: JSON.stringify({ device: device, ts: ts, reason: reasons.join(",") }) };
return [msg, alarm];
