#!/usr/bin/env bash
# The main job (README): a simulated Shuibei community with live ingestion in the terminal.
# Works on a fresh Debian machine as root. Extra arguments go to `sentinel demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh
bootstrap_system python3-venv mosquitto
bootstrap_venv ""
exec .venv/bin/sentinel demo -c config/sentinel.toml "$@"
