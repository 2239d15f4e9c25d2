#!/usr/bin/env bash
# Firehose and sync figures, our server vs the reference PDS, same client
# (bench.mjs), same machine, one after the other. See README.md.
#
#   e2e/firehose-bench/run.sh                    ~5-8 min (the reference's creates take most of it)
#   RECORDS=2000 LIVE=100 SUBS=10 e2e/firehose-bench/run.sh
#   ONLY=ours e2e/firehose-bench/run.sh          (or ONLY=ref)
#
# Env: REFPDS_SRC (<repo>/../shared/refpds, read-only), REFPDS_DIR (writable
# copy, /tmp/refpds-bench), REFPDS_DATA (/tmp/refpds-bench-data),
# REFPDS_PORT / REFPDS_PLC_PORT (2593 / 2592), OURS_PORT (2693),
# FHB_WORK (/tmp/firehose-bench: our binary, data dir, log, results.jsonl),
# PDS_BIN (a prebuilt pds instead of go build), SUBS (100), WARM (20),
# LIVE (200), RECORDS (5000), GETREPO_RUNS (5).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
REFPDS_SRC="${REFPDS_SRC:-$ROOT/../shared/refpds}"
export REFPDS_DIR="${REFPDS_DIR:-/tmp/refpds-bench}"
export REFPDS_DATA="${REFPDS_DATA:-/tmp/refpds-bench-data}"
export REFPDS_PORT="${REFPDS_PORT:-2593}"
export REFPDS_PLC_PORT="${REFPDS_PLC_PORT:-2592}"
OURS_PORT="${OURS_PORT:-2693}"
WORK="${FHB_WORK:-/tmp/firehose-bench}"
SUBS="${SUBS:-100}" WARM="${WARM:-20}" LIVE="${LIVE:-200}" RECORDS="${RECORDS:-5000}" GETREPO_RUNS="${GETREPO_RUNS:-5}"
ONLY="${ONLY:-}"
OURS_DATA="$WORK/ours-data"
OUT="$WORK/results.jsonl"
OURS_PID=""
REF_STARTED=0

log() { echo "firehose-bench: $*" >&2; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cleanup() {
  if [[ -n "$OURS_PID" ]] && kill -0 "$OURS_PID" 2>/dev/null; then
    kill -TERM "$OURS_PID"
    for ((i = 0; i < 100; i++)); do kill -0 "$OURS_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$OURS_PID" 2>/dev/null && kill -KILL "$OURS_PID"
    log "stopped our server (pid $OURS_PID)"
  fi
  if ((REF_STARTED)); then "$REFPDS_DIR/stop.sh" || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK"
: >"$OUT"

# --- the reference (a writable copy of the read-only shared folder) ----------
if [[ ! -x "$REFPDS_DIR/start.sh" ]]; then
  log "copying $REFPDS_SRC to $REFPDS_DIR"
  cp -r "$REFPDS_SRC" "$REFPDS_DIR"
  chmod -R u+w "$REFPDS_DIR"
fi
"$REFPDS_DIR/start.sh" --install # 2-4 min the first time
for p in "$REFPDS_PORT" "$REFPDS_PLC_PORT" "$OURS_PORT"; do
  port_free "$p" || { log "port $p is taken; set REFPDS_PORT / REFPDS_PLC_PORT / OURS_PORT"; exit 1; }
done
REF_STARTED=1
"$REFPDS_DIR/start.sh" --reset >/dev/null # also the PLC stub both servers use

# --- ours ---------------------------------------------------------------------
if [[ -n "${PDS_BIN:-}" ]]; then
  BIN="$PDS_BIN"
else
  BIN="$WORK/pds"
  log "building ./cmd/pds into $BIN"
  (cd "$ROOT" && go build -o "$BIN" ./cmd/pds)
fi
rm -rf "$OURS_DATA"
mkdir -p "$OURS_DATA"
env PDS_HOSTNAME=localhost PDS_PORT="$OURS_PORT" PDS_LISTEN_ADDRESS="127.0.0.1:$OURS_PORT" \
  PDS_DATA_DIRECTORY="$OURS_DATA" PDS_DID_PLC_URL="http://localhost:$REFPDS_PLC_PORT" \
  PDS_SERVICE_HANDLE_DOMAINS=.test PDS_INVITE_REQUIRED=false LOG_LEVEL=warn \
  "$BIN" serve >>"$WORK/ours.log" 2>&1 </dev/null &
OURS_PID=$!
for ((i = 0; i < 100; i++)); do
  curl -fsS -o /dev/null "http://127.0.0.1:$OURS_PORT/xrpc/_health" 2>/dev/null && break
  kill -0 "$OURS_PID" 2>/dev/null || { log "our server exited; see $WORK/ours.log"; exit 1; }
  sleep 0.1
done
log "ours pid $OURS_PID on :$OURS_PORT, reference pid $(cat "$REFPDS_DATA/pds.pid") on :$REFPDS_PORT"

run() { # label url
  log "$1: $(cut -d' ' -f1-3 /proc/loadavg) load"
  (cd "$ROOT" && "$REFPDS_DIR/node.sh" "$HERE/bench.mjs" --url "$2" --label "$1" --subs "$SUBS" \
    --warm "$WARM" --live "$LIVE" --records "$RECORDS" --getrepo-runs "$GETREPO_RUNS" --json) >>"$OUT"
}
[[ "$ONLY" == ref ]] || run ours "http://127.0.0.1:$OURS_PORT"
[[ "$ONLY" == ours ]] || run ref "http://127.0.0.1:$REFPDS_PORT"

# --- summary --------------------------------------------------------------------
"$REFPDS_DIR/node.sh" -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse)
const col = (f) => rows.map((r) => String(f(r)).padStart(12)).join("")
const line = (name, f) => console.log(name.padEnd(44) + col(f))
line("", (r) => r.label)
line(`live delivery p50 ms (${rows[0].live.subs} subs)`, (r) => r.live.delivery.p50)
line("live delivery p90 ms", (r) => r.live.delivery.p90)
line("live delivery p99 ms", (r) => r.live.delivery.p99)
line("live delivery, last subscriber p50 ms", (r) => r.live.lastSubscriber.p50)
line("createRecord during live p50 ms", (r) => r.live.createRecord.p50)
line("createRecord bulk p50 ms", (r) => r.bulk.createRecord?.p50)
line("replay events", (r) => r.replay.events)
line("replay events/s", (r) => r.replay.eventsPerSec)
line("replay MB/s", (r) => r.replay.MBps)
line("replay bytes/event", (r) => r.replay.bytesPerEvent)
line("getRepo records", (r) => r.getRepo.records)
line("getRepo CAR bytes", (r) => r.getRepo.bytes)
line("getRepo MB/s (median)", (r) => r.getRepo.MBps)
' "$OUT"
log "raw results: $OUT"
