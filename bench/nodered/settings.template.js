// Node-RED settings for the benchmark peer. bench/nodered.py writes this file into the
// peer's work directory, the placeholder below replaced by a JSON object (ports, paths).
//
// Loopback only, no credentials prompt (no adminAuth: the editor is reachable from this
// machine only), no telemetry, no update checks, no palette installs, no project features.
// The only patch: MQTT.js's CONNACK and SUBACK are noted in an events file (one JSON line
// each), so the benchmark knows when the client is connected *and* subscribed.
const fs = require("fs");
const bench = __BENCH__;

function note(event) {
    try {
        fs.appendFileSync(bench.eventsFile, JSON.stringify(Object.assign({ t: Date.now() }, event)) + "\n");
    } catch (err) {
        console.error("bench: cannot write " + bench.eventsFile + ": " + err);
    }
}

try {
    // The same module instance as @node-red/nodes' 10-mqtt.js requires.
    const mqttPath = require.resolve("mqtt", { paths: [bench.nodesDir] });
    const { MqttClient } = require(mqttPath);
    const onConnect = MqttClient.prototype._onConnect;
    if (typeof onConnect !== "function") throw new Error("MqttClient.prototype._onConnect not found");
    MqttClient.prototype._onConnect = function (packet) {
        note({ event: "connack", client: this.options.clientId,
               session_present: !!(packet && packet.sessionPresent) });
        if (bench.tcpNoDelay && this.stream && typeof this.stream.setNoDelay === "function") {
            this.stream.setNoDelay(true); // off by default, as in a stock Node-RED
        }
        return onConnect.apply(this, arguments);
    };
    const subscribe = MqttClient.prototype.subscribe;
    MqttClient.prototype.subscribe = function (topics, opts, callback) {
        if (typeof opts === "function") {
            callback = opts;
            opts = undefined;
        }
        const client = this;
        return subscribe.call(this, topics, opts || {}, function (err, granted) {
            note({ event: "suback", client: client.options.clientId, error: err ? String(err) : null,
                   granted: (granted || []).map((g) => [g.topic, g.qos]) });
            if (typeof callback === "function") return callback.apply(this, arguments);
        });
    };
    note({ event: "patched", mqtt: mqttPath });
} catch (err) {
    note({ event: "patch_failed", error: String(err) });
}

module.exports = {
    uiHost: "127.0.0.1",
    uiPort: bench.uiPort,
    userDir: bench.userDir,
    flowFile: "flows.json",
    flowFilePretty: true,
    credentialSecret: "sentinel-bench-peer", // there are no credentials; avoids a warning
    httpNodeRoot: false, // no http-in endpoints
    mqttReconnectTime: 1000,
    disableEditor: false,
    externalModules: {
        autoInstall: false,
        palette: { allowInstall: false, allowUpload: false },
        modules: { allowInstall: false },
    },
    functionExternalModules: false,
    telemetry: { enabled: false, updateNotification: false },
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    editorTheme: {
        tours: false,
        palette: { catalogues: [] },
        multiplayer: { enabled: false },
    },
    logging: {
        console: { level: "info", metrics: false, audit: false },
    },
    exportGlobalContextKeys: false,
};
