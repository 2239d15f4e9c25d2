# Shared by e2e/run.sh and e2e/bench.sh (sourced, not run): start and stop
# the reference PDS (a writable copy of ../shared/refpds) and our server.
#
# Env overrides:
#   REFPDS_SRC    the refpds folder to copy   (e2e/refpds, a copy of ../shared/refpds)
#   REFPDS_DIR    the writable copy, node 22 + node_modules live here (/tmp/refpds)
#   E2E_WORK      scratch folder: our data dir, logs, results (/tmp/pds-e2e)
#   REFPDS_DATA   the reference's data dir ($E2E_WORK/refpds-data)
#   REFPDS_PORT / REFPDS_PLC_PORT   reference PDS / PLC stub ports (2583 / 2582)
#   OURS_PORT     our server's port (2683)
#   PDS_BIN       use this pds binary instead of building ./cmd/pds

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$E2E_DIR/.." && pwd)"
REFPDS_SRC="${REFPDS_SRC:-$E2E_DIR/refpds}"
export REFPDS_DIR="${REFPDS_DIR:-/tmp/refpds}"
E2E_WORK="${E2E_WORK:-/tmp/pds-e2e}"
export REFPDS_DATA="${REFPDS_DATA:-$E2E_WORK/refpds-data}"
export REFPDS_PORT="${REFPDS_PORT:-2583}"
export REFPDS_PLC_PORT="${REFPDS_PLC_PORT:-2582}"
OURS_PORT="${OURS_PORT:-2683}"
REF_URL="http://127.0.0.1:$REFPDS_PORT"
OURS_URL="http://127.0.0.1:$OURS_PORT"
OURS_DATA="$E2E_WORK/ours-data"
OURS_PID=""

log() { echo "e2e: $*" >&2; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The refpds scripts install node 22 and node_modules next to themselves, and
# the shared folder is read-only: work from a copy.
# A copy made from an older REFPDS_SRC gets its changed files (start.sh
# reinstalls node_modules when package*.json changed).
refpds_copy() {
  [[ -d "$REFPDS_SRC" ]] || { log "no refpds at $REFPDS_SRC (set REFPDS_SRC)"; return 1; }
  local f
  mkdir -p "$REFPDS_DIR"
  for f in "$REFPDS_SRC"/* "$REFPDS_SRC"/.gitignore; do
    [[ -f "$f" ]] || continue
    if ! cmp -s "$f" "$REFPDS_DIR/$(basename "$f")"; then
      log "copying $f to $REFPDS_DIR"
      cp "$f" "$REFPDS_DIR/"
      chmod u+w "$REFPDS_DIR/$(basename "$f")"
    fi
  done
}

# node 22 from the copy (installs it and node_modules on first use, 2-4 min)
node22() { "$REFPDS_DIR/node.sh" "$@"; }

ref_start() {
  refpds_copy
  mkdir -p "$E2E_WORK"
  "$REFPDS_DIR/start.sh" --install
  if [[ ! -f "$REFPDS_DATA/pds.pid" ]]; then
    for p in "$REFPDS_PORT" "$REFPDS_PLC_PORT"; do
      port_free "$p" || { log "port $p is taken by another process; set REFPDS_PORT / REFPDS_PLC_PORT"; return 1; }
    done
  fi
  "$REFPDS_DIR/start.sh" --reset >/dev/null
}

ref_stop() { [[ -x "$REFPDS_DIR/stop.sh" ]] && "$REFPDS_DIR/stop.sh" || true; }
ref_pid() { cat "$REFPDS_DATA/pds.pid"; }

ours_build() {
  if [[ -n "${PDS_BIN:-}" ]]; then
    OURS_BIN="$PDS_BIN"
  else
    OURS_BIN="$E2E_WORK/pds"
    mkdir -p "$E2E_WORK"
    log "building ./cmd/pds into $OURS_BIN"
    (cd "$ROOT" && go build -o "$OURS_BIN" ./cmd/pds)
  fi
}

# Our server's environment: the same PLC stub as the reference (so both make
# did:plc DIDs in one directory), the reference's handle domain, open sign-up
# like refpds (PDS_INVITE_REQUIRED=false), and the AppView refpds configures:
# a loopback port where nothing listens (REFPDS_APPVIEW_PORT, 2584), which
# needs PDS_DEV_ALLOW_PRIVATE_UPSTREAMS for ours (refpds runs in dev mode,
# which turns its SSRF protection off).
# (an array, not a function: "func &" would fork a subshell and $! would be
# its PID, not the server's)
ours_env=(env PDS_HOSTNAME=localhost PDS_PORT="$OURS_PORT" PDS_DATA_DIRECTORY="$OURS_DATA"
  PDS_DID_PLC_URL="http://localhost:$REFPDS_PLC_PORT" PDS_SERVICE_HANDLE_DOMAINS=.test
  PDS_INVITE_REQUIRED=false PDS_ADMIN_PASSWORD=admin-pass LOG_LEVEL="${OURS_LOG_LEVEL:-warn}"
  PDS_BSKY_APP_VIEW_URL="http://127.0.0.1:${REFPDS_APPVIEW_PORT:-2584}" PDS_BSKY_APP_VIEW_DID=did:web:appview.localhost
  PDS_DEV_ALLOW_PRIVATE_UPSTREAMS=true)

# ours_start: fresh data dir unless KEEP=1 is passed as $1
ours_start() {
  [[ "${1:-}" == keep ]] || rm -rf "$OURS_DATA"
  mkdir -p "$OURS_DATA"
  port_free "$OURS_PORT" || { log "port $OURS_PORT is taken; set OURS_PORT"; return 1; }
  "${ours_env[@]}" "$OURS_BIN" serve >>"$E2E_WORK/ours.log" 2>&1 </dev/null &
  OURS_PID=$!
  echo "$OURS_PID" >"$E2E_WORK/ours.pid"
  local i
  for ((i = 0; i < 100; i++)); do
    curl -fsS -o /dev/null "$OURS_URL/xrpc/_health" 2>/dev/null && return 0
    kill -0 "$OURS_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "our server did not come up; last lines of $E2E_WORK/ours.log:"
  tail -n 20 "$E2E_WORK/ours.log" >&2
  return 1
}

ours_stop() {
  if [[ -n "$OURS_PID" ]] && kill -0 "$OURS_PID" 2>/dev/null; then
    kill -TERM "$OURS_PID"
    local i
    for ((i = 0; i < 100; i++)); do
      kill -0 "$OURS_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$OURS_PID" 2>/dev/null && kill -KILL "$OURS_PID"
  fi
  OURS_PID=""
  rm -f "$E2E_WORK/ours.pid"
}

# memory of a PID from /proc/PID/status, MiB, as JSON: VmRSS, peak VmHWM,
# and VmRSS split into anonymous (heap) and file-backed pages (for ours
# mostly the mmap of the bbolt file: page cache the kernel can drop)
rss_json() {
  awk '/^VmRSS:/{r=$2} /^VmHWM:/{h=$2} /^RssAnon:/{a=$2} /^RssFile:/{f=$2} /^RssShmem:/{s=$2}
    END{printf "{\"rssMiB\":%.1f,\"hwmMiB\":%.1f,\"anonMiB\":%.1f,\"fileMiB\":%.1f,\"shmemMiB\":%.1f}\n", r/1024, h/1024, a/1024, f/1024, s/1024}' "/proc/$1/status"
}
