#!/bin/sh
# Runs the broker and makes it reread its accounts when the engine rewrites them: the engine
# replaces /run/ebd-broker-auth/terminals.passwd (atomically) whenever it issues, rotates or
# revokes a terminal's account, and waits until the broker takes the new file.
set -u
ACCOUNTS=/run/ebd-broker-auth/terminals.passwd
mosquitto -c /mosquitto/config/mosquitto.conf &
pid=$!
trap 'kill -TERM "$pid"; wait "$pid"; exit 0' TERM INT
last=$(md5sum "$ACCOUNTS" 2>/dev/null)
while kill -0 "$pid" 2>/dev/null; do
    sleep 0.5
    now=$(md5sum "$ACCOUNTS" 2>/dev/null)
    if [ "$now" != "$last" ]; then
        kill -HUP "$pid"
        last=$now
    fi
done
wait "$pid"
