#!/usr/bin/env bash
# `make run`: start `fleetflow dev up` in the background, run the example workflow remotely
# through control plane -> Temporal -> agent -> local process, print its outputs, stop the stack.
set -euo pipefail

state="$PWD/.fleetflow"
mkdir -p "$state"
export FLEETFLOW_CONFIG="$state/config.json"
rm -f "$FLEETFLOW_CONFIG"

fleetflow dev up --home "$state/dev" > "$state/dev-up.log" 2>&1 &
stack=$!
cleanup() {
  if kill -0 "$stack" 2>/dev/null; then
    kill -INT "$stack"
    wait "$stack" || true
  fi
}
trap cleanup EXIT

echo "starting the embedded stack (log: $state/dev-up.log) ..."
for _ in $(seq 1 240); do
  if [ -f "$FLEETFLOW_CONFIG" ]; then break; fi
  if ! kill -0 "$stack" 2>/dev/null; then
    echo "fleetflow dev up exited early:" >&2
    cat "$state/dev-up.log" >&2
    exit 1
  fi
  sleep 0.5
done
if [ ! -f "$FLEETFLOW_CONFIG" ]; then
  echo "the stack did not come up in 120s:" >&2
  cat "$state/dev-up.log" >&2
  exit 1
fi
cat "$state/dev-up.log"

fleetflow run --remote --timeout 180 examples/hello.py hello_pipeline --n 20
