#!/usr/bin/env bash
# Arize Phoenix on 127.0.0.1 for the OTLP integration tests (tests/integration/test_phoenix.py).
#
#   scripts/phoenix.sh          # install (once, into .phoenix-venv/) and start; prints the PID
#   scripts/phoenix.sh stop     # stop it
#   scripts/phoenix.sh status   # is it running?
#
# UI and OTLP/HTTP on http://127.0.0.1:6006 (OTLP at /v1/traces), OTLP/gRPC on a free port.
# Data, log and PID file live in .phoenix-data/ (gitignored, like .phoenix-venv/).
# Overrides: PHOENIX_VERSION, PHOENIX_PORT (6006), PHOENIX_GRPC_PORT (free port),
# PHOENIX_START_TIMEOUT (seconds, 180), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PHOENIX_VERSION=${PHOENIX_VERSION:-20.26.1}
PYTHON=${PYTHON:-python3}
VENV=$ROOT/.phoenix-venv
DATA=$ROOT/.phoenix-data
PIDFILE=$DATA/phoenix.pid
LOG=$DATA/phoenix.log
PORT=${PHOENIX_PORT:-6006}
URL=http://127.0.0.1:$PORT

say() { echo "phoenix: $*" >&2; }

# `phoenix serve`, except that its OTLP/gRPC server, which Phoenix binds to every interface
# ([::]), is bound to 127.0.0.1 like the HTTP server (PHOENIX_HOST).
LAUNCHER='
import sys
import grpc.aio._server as aio_server

_add_insecure_port = aio_server.Server.add_insecure_port


def add_insecure_port(self, address):
    return _add_insecure_port(self, address.replace("[::]:", "127.0.0.1:"))


aio_server.Server.add_insecure_port = add_insecure_port
from phoenix.server.main import main

sys.argv[0] = "phoenix"
sys.exit(main())
'

running_pid() {
    [[ -f $PIDFILE ]] || return 1
    local pid
    pid=$(cat "$PIDFILE")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

healthy() { curl -fsS --max-time 2 "$URL/healthz" >/dev/null 2>&1; }

install() {
    local stamp=$VENV/.installed-$PHOENIX_VERSION
    [[ -f $stamp ]] && return 0
    say "installing arize-phoenix==$PHOENIX_VERSION into $VENV (first run only)"
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check uv
    "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" "arize-phoenix==$PHOENIX_VERSION"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    if pid=$(running_pid); then
        say "already running (PID $pid) at $URL"
        echo "$pid"
        return 0
    fi
    if healthy; then
        # Started elsewhere (another checkout, by hand): use it; `stop` leaves it alone.
        say "a Phoenix not started from here already answers on $URL; using it"
        return 0
    fi
    install
    mkdir -p "$DATA"
    local grpc_port=${PHOENIX_GRPC_PORT:-$(free_port)}
    say "starting on $URL (OTLP/HTTP $URL/v1/traces, OTLP/gRPC 127.0.0.1:$grpc_port); log: $LOG"
    (
        cd "$DATA"
        export PHOENIX_HOST=127.0.0.1 PHOENIX_PORT=$PORT PHOENIX_GRPC_PORT=$grpc_port
        export PHOENIX_WORKING_DIR=$DATA PHOENIX_TELEMETRY_ENABLED=false
        export PHOENIX_ALLOW_EXTERNAL_RESOURCES=false
        # Phoenix is a separate service: none of the caller's tracing settings apply to it.
        unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT OTEL_SDK_DISABLED
        exec setsid "$VENV/bin/python" -c "$LAUNCHER" serve >"$LOG" 2>&1 </dev/null
    ) &
    local pid=$!
    echo "$pid" >"$PIDFILE"
    local timeout=${PHOENIX_START_TIMEOUT:-180} waited=0
    until healthy; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "exited while starting; last lines of $LOG:"
            tail -n 30 "$LOG" >&2 || true
            rm -f "$PIDFILE"
            return 1
        fi
        if ((waited >= timeout)); then
            say "not ready after ${timeout}s; stopping it. Last lines of $LOG:"
            tail -n 30 "$LOG" >&2 || true
            stop
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "ready after ${waited}s (PID $pid)"
    echo "$pid"
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        say "not running"
        rm -f "$PIDFILE"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "did not stop within 15s; killing PID $pid"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    say "stopped (PID $pid)"
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
status)
    if pid=$(running_pid) && healthy; then
        say "running (PID $pid) at $URL"
        echo "$pid"
    else
        say "not running"
        exit 1
    fi
    ;;
*)
    echo "usage: $0 [start|stop|status]" >&2
    exit 2
    ;;
esac
