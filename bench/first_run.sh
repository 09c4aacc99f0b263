#!/usr/bin/env bash
# The "fast first run" figure of the README: from `git clone` of this checkout's HEAD to the first
# streamed `final` of the demo agent under `make run`, with empty uv and pip caches and a fresh
# .data/ (initdb, migrations, seed). Prints the install, banner and final times from the clone.
#   bench/first_run.sh [PORT]      (default 18765; the clone goes to a temporary folder, removed after)
set -u
SOURCE=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
PORT=${1:-18765}
WORK=$(mktemp -d)
export UV_CACHE_DIR=$WORK/uv-cache PIP_NO_CACHE_DIR=1 PORT
LOG=$WORK/run.log
started=$(date +%s.%N)
git clone -q "$SOURCE" "$WORK/clone"
cd "$WORK/clone"
setsid make run >"$LOG" 2>&1 &
RUN_PID=$!
finish() {
    kill -TERM -- "-$RUN_PID" 2>/dev/null
    wait "$RUN_PID" 2>/dev/null
    .venv/bin/python manage.py local_services stop >/dev/null 2>&1
    cd / && rm -rf "$WORK"
}
trap finish EXIT
installed=""
until grep -q "curl -N -X POST" "$LOG"; do
    [ -z "$installed" ] && [ -e .venv/.installed ] && installed=$(date +%s.%N)
    if ! kill -0 "$RUN_PID" 2>/dev/null; then echo "make run exited:"; tail -30 "$LOG"; exit 1; fi
    sleep 0.2
done
banner=$(date +%s.%N)
url=$(grep -o "http://[^ ]*/execute/stream" "$LOG" | head -1)
key=$(grep -o "X-API-Key: eak_[^' ]*" "$LOG" | head -1 | cut -d' ' -f2)
workspace=$(grep -o "X-Workspace-Id: workspace:[0-9a-f-]*" "$LOG" | head -1 | cut -d' ' -f2)
final=""
while read -r line; do
    case "$line" in *'"type": "final"'* | *'"type":"final"'*) final=$(date +%s.%N); break ;; esac
done < <(curl -sN --max-time 120 -X POST "$url" -H "X-API-Key: $key" -H "X-Workspace-Id: $workspace" \
    -H 'Content-Type: application/json' -d '{"message": "Hello, platform!"}')
[ -n "$final" ] || { echo "no final event"; exit 1; }
python3 -c "print('install %.1f s, banner %.1f s, first final %.1f s (load average %s)' % \
    ($installed - $started, $banner - $started, $final - $started, open('/proc/loadavg').read().split()[0]))"
