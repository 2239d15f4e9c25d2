#!/usr/bin/env bash
# Sequential createRecord latency and server RSS, our server vs the reference
# PDS, in one run on one machine, with the same client (refpds bench.mjs:
# @atproto/api, one logged-in session, one call at a time).
#
#   e2e/bench.sh                       ~5-8 min (the reference's 10,000 creates take most of it)
#   N=1000 BIG_N=10000 REF_BIG_N=2000 WARM=100 IDLE=5 FINAL_IDLE=30 e2e/bench.sh
#
# Steps, each server on fresh data:
#   1. start the reference (start.sh --reset), wait IDLE s, read its RSS
#   2. create our account offline (pds account create), start ours, wait
#      IDLE s, read its RSS
#   3. one account on each (created once, then --login-only for every run)
#   4. warm-up: WARM creates on each (JIT, page cache), not reported
#   5. latency: N creates on ours, then N on the reference
#   6. memory: BIG_N creates on ours, REF_BIG_N (default BIG_N) on the
#      reference, with --pid so bench.mjs reads VmRSS/VmHWM before and after
#      (and this script the anonymous/file-backed split right after);
#      then FINAL_IDLE (30) s later once more
# Results: a summary on stdout, raw JSON lines in $E2E_WORK/bench.jsonl.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N="${N:-1000}"
BIG_N="${BIG_N:-10000}"
REF_BIG_N="${REF_BIG_N:-$BIG_N}"
WARM="${WARM:-100}"
IDLE="${IDLE:-5}"
FINAL_IDLE="${FINAL_IDLE:-30}"
PASSWORD="bench-Passw0rd-$RANDOM$RANDOM"
OURS_HANDLE="bench.test"
REF_HANDLE="bench-$RANDOM$RANDOM.test"
OUT="$E2E_WORK/bench.jsonl"

cleanup() {
  ours_stop
  ref_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$E2E_WORK"
: >"$OUT"
note() { # key json-value
  echo "{\"step\":\"$1\",\"value\":$2}" >>"$OUT"
}
bench() { # name url n [extra args...]
  local name=$1 url=$2 n=$3
  shift 3
  log "$name: $n creates on $url ($(uptime | sed 's/.*load/load/'))"
  local line
  line="$(cd "$REFPDS_DIR" && node22 bench.mjs "$url" --n "$n" --json "$@")"
  echo "{\"step\":\"$name\",\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"value\":$line}" >>"$OUT"
  echo "$line"
}

ours_build
ref_start
REF_PID="$(ref_pid)"
rm -rf "$OURS_DATA"
mkdir -p "$OURS_DATA"
printf '%s\n' "$PASSWORD" | "${ours_env[@]}" "$OURS_BIN" account create --handle "$OURS_HANDLE" \
  --email bench@example.com >&2
ours_start keep
log "reference pid $REF_PID, ours pid $OURS_PID; idle ${IDLE}s"
sleep "$IDLE"
note ref.idle "$(rss_json "$REF_PID")"
note ours.idle "$(rss_json "$OURS_PID")"

curl -fsS -o /dev/null -H 'content-type: application/json' \
  -d "{\"handle\":\"$REF_HANDLE\",\"email\":\"bench@example.com\",\"password\":\"$PASSWORD\"}" \
  "$REF_URL/xrpc/com.atproto.server.createAccount"
OURS_ARGS=(--login-only --handle "$OURS_HANDLE" --password "$PASSWORD" --pid "$OURS_PID")
REF_ARGS=(--login-only --handle "$REF_HANDLE" --password "$PASSWORD" --pid "$REF_PID")

bench ours.warm "$OURS_URL" "$WARM" "${OURS_ARGS[@]}" >/dev/null
bench ref.warm "$REF_URL" "$WARM" "${REF_ARGS[@]}" >/dev/null
bench ours.latency "$OURS_URL" "$N" "${OURS_ARGS[@]}" >/dev/null
bench ref.latency "$REF_URL" "$N" "${REF_ARGS[@]}" >/dev/null
bench ours.big "$OURS_URL" "$BIG_N" "${OURS_ARGS[@]}" >/dev/null
note ours.afterBig "$(rss_json "$OURS_PID")"
bench ref.big "$REF_URL" "$REF_BIG_N" "${REF_ARGS[@]}" >/dev/null
note ref.afterBig "$(rss_json "$REF_PID")"
log "idle ${FINAL_IDLE}s"
sleep "$FINAL_IDLE"
note ref.afterIdle "$(rss_json "$REF_PID")"
note ours.afterIdle "$(rss_json "$OURS_PID")"
du -sk "$OURS_DATA" "$REFPDS_DATA/pds" | awk '{printf "{\"step\":\"disk\",\"path\":\"%s\",\"value\":{\"MiB\":%.1f}}\n", $2, $1/1024}' >>"$OUT"

# summary
node22 - "$OUT" "$N" "$BIG_N" "$REF_BIG_N" "$WARM" "$IDLE" "$FINAL_IDLE" <<'EOF'
const fs = require('node:fs')
const [file, n, bigN, refBigN, warm, idle, finalIdle] = process.argv.slice(2)
const rows = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
const get = (s) => rows.find((r) => r.step === s)?.value
const ol = get('ours.latency'), rl = get('ref.latency'), ob = get('ours.big'), rb = get('ref.big')
const x = (a, b) => (a / b).toFixed(1) + 'x'
console.log(`createRecord, sequential, one session (warm-up ${warm} each first)`)
console.log('| run | n | median ms | p90 ms | p99 ms | mean ms | per s |')
console.log('| --- | --- | --- | --- | --- | --- | --- |')
for (const [name, r] of [['ours', ol], ['reference', rl], ['ours (memory run)', ob], ['reference (memory run)', rb]]) {
  console.log(`| ${name} | ${r.n} | ${r.medianMs} | ${r.p90Ms} | ${r.p99Ms} | ${r.meanMs} | ${r.perSec} |`)
}
console.log(`ratio reference/ours (n=${n}): median ${x(rl.medianMs, ol.medianMs)}, p99 ${x(rl.p99Ms, ol.p99Ms)}, mean ${x(rl.meanMs, ol.meanMs)}`)
console.log(`ratio reference/ours (memory run): median ${x(rb.medianMs, ob.medianMs)}, p99 ${x(rb.p99Ms, ob.p99Ms)}`)
console.log('')
console.log('RSS of the PDS process, MiB: VmRSS (peak VmHWM) [anonymous + file-backed]')
console.log('| moment | ours | reference |')
console.log('| --- | --- | --- |')
const m = (v) => (v ? `${v.rssMiB} (${v.hwmMiB})` + (v.anonMiB !== undefined ? ` [${v.anonMiB} + ${v.fileMiB}]` : '') : '-')
console.log(`| idle, ${idle} s after start | ${m(get('ours.idle'))} | ${m(get('ref.idle'))} |`)
console.log(`| before the memory run (after ${warm}+${n} creates) | ${m(ob.rssBefore)} | ${m(rb.rssBefore)} |`)
console.log(`| after the memory run (ours +${bigN}, reference +${refBigN}) | ${m(get('ours.afterBig'))} | ${m(get('ref.afterBig'))} |`)
console.log(`| ${finalIdle} s idle after all runs | ${m(get('ours.afterIdle'))} | ${m(get('ref.afterIdle'))} |`)
for (const r of rows.filter((r) => r.step === 'disk')) console.log(`disk: ${r.path} ${r.value.MiB} MiB`)
console.log('load average (1/5/15 min) at the end of each run: ' + rows.filter((r) => r.load).map((r) => `${r.step} ${r.load}`).join('; '))
EOF
log "raw results: $OUT"
