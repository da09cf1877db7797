#!/usr/bin/env bash
# Stop the daemons that start.sh launched, by the pid files in its state directory (never by name),
# then remove that directory.
dir=${KILN_CEPH_DIR:-${TMPDIR:-/tmp}/kiln-ceph-$(id -u)}
[ -d "$dir/run" ] || exit 0
pids=()
for name in client.rgw.kiln osd.0 mon.a; do
  f="$dir/run/$name.pid"
  if [ -f "$f" ]; then
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null && pids+=("$pid")
  fi
done
for pid in "${pids[@]}"; do
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
done
[ "${KILN_CEPH_KEEP:-0}" = 1 ] || rm -rf "$dir"
