#!/usr/bin/env bash
# The main job (README): a simulated Shuibei community with live ingestion in the terminal.
# Works on a fresh Debian machine as root. Extra arguments go to `sentinel demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh
echo "sentinel: set-up: checking for python3-venv and mosquitto, then the project's .venv" >&2
bootstrap_system python3-venv mosquitto
bootstrap_venv ""
echo "sentinel: starting the demo (.venv/bin/sentinel demo; its data in state/demo/)" >&2
exec .venv/bin/sentinel demo -c config/sentinel.toml "$@"
