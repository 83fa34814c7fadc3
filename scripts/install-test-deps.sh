#!/bin/sh
# Install what the test suite drives for real: Debian's Chromium, ClickHouse server and the
# snippet's build tool. Each step runs only when its tool is missing.
set -eu

missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v clickhouse-server >/dev/null 2>&1 || missing="$missing clickhouse-server clickhouse-client"
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "Error: missing Debian packages:$missing; install them as root" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi

if [ ! -x node_modules/.bin/terser ] && command -v npm >/dev/null 2>&1; then
    npm ci --silent --no-audit --no-fund
fi
