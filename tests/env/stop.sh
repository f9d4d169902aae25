#!/bin/bash
# Stop the two test registries started by tests/env/setup.sh. dockerd, the registry storage and
# the images are left alone (the next setup.sh restarts the registries in a second).
set -euo pipefail

STATE=${DSPY_TEST_STATE:-/var/lib/dockershim-py-test}
say() { echo "test-env: $*"; }

for name in open auth; do
  cfg=$STATE/registry-$name.yml
  pidf=$STATE/registry-$name.pid
  pids=""
  p=$(cat "$pidf" 2>/dev/null || true)
  [ -n "$p" ] && pids=$p
  # also any docker-registry serving our config whose pid file got lost
  for d in /proc/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = docker-registry ] || continue
    [[ " $(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) " == *" $cfg "* ]] && pids="$pids ${d#/proc/}"
  done
  stopped=""
  for p in $(echo "$pids" | tr ' ' '\n' | sort -u); do
    # only ever kill our own registry process
    [[ " $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) " == *" $cfg "* ]] || continue
    kill "$p" 2>/dev/null || continue
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null
    stopped="$stopped $p"
  done
  rm -f "$pidf"
  if [ -n "$stopped" ]; then say "registry $name stopped (pid$stopped)"; else say "registry $name not running"; fi
done
