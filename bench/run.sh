#!/usr/bin/env bash
# The comparison benchmark (bench/README.md): sentinel, the Node-RED peer and bare MQTT
# consumers side by side. Works on a fresh Debian machine as root: installs mosquitto,
# victoria-metrics, Node.js + npm and the venv with the test and bench extras, then runs
# bench/compare.py with the given arguments (e.g. --repeat 1, --only ingest, --json out.json).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh
packages=(python3-venv mosquitto victoria-metrics)
# The Node-RED peer needs Node.js and npm; a node and npm already on PATH (NodeSource's, nvm's)
# are used as they are: Debian's npm package would conflict with NodeSource's nodejs.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    packages+=(nodejs npm)
fi
bootstrap_system "${packages[@]}"
bootstrap_venv "test,bench"
exec .venv/bin/python bench/compare.py "$@"
