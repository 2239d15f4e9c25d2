#!/usr/bin/env bash
# Account migration end to end, with the reference PDS on both sides of ours:
#
#   e2e/migrate.sh [api|goat|all] [--ref-only]
#
#   api   (@atproto/api, the reference's migration-guide flow, e2e/migrate.mjs):
#         seed an account (>= 500 records in 4 collections, 22 blobs, 5.5 MiB)
#         on reference A, move it A -> ours -> reference B, check after each move.
#   goat  (`goat account migrate`): a smaller account, reference A -> ours,
#         then ours -> reference B, the same checks after each move.
#   all   both (default).
#   --ref-only   the same moves with reference B in place of ours (A -> B):
#         validates the harness and the flows against a known-good server.
#
# One PLC stub (refpds plc.mjs, started with reference A) serves all three
# servers. Reference A on REF_A_PORT (2583, the stub on REFPDS_PLC_PORT 2582),
# reference B on REF_B_PORT (2593), ours on OURS_PORT (2683); each reference
# has its own data dir and service DID (did:web:localhost%3APORT), so a
# service-auth JWT for one is not valid at another. Every run starts all
# three on fresh data and stops them at the end.
#
# Needs: the refpds copy (REFPDS_DIR, see lib.sh; first install 2-4 min), Go,
# and for goat: GOAT_BIN, or the goat source to build (GOAT_SRC, default
# e2e/goat, then ../shared/tools/goat/src). Scratch: E2E_WORK (default
# /tmp/pds-e2e-migrate): logs, data dirs, state files.
# Exit status: 0 every move and check passed; 1 some failed; 2 setup failed.
set -euo pipefail
export E2E_WORK="${E2E_WORK:-/tmp/pds-e2e-migrate}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WHAT=all
REF_ONLY=0
for a in "$@"; do
  case "$a" in
    api | goat | all) WHAT="$a" ;;
    --ref-only) REF_ONLY=1 ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) log "unknown argument $a"; exit 2 ;;
  esac
done

REF_A_PORT="${REF_A_PORT:-$REFPDS_PORT}"
REF_B_PORT="${REF_B_PORT:-2593}"
PLC_URL="http://localhost:$REFPDS_PLC_PORT" # a name: the reference refuses IP hosts
REF_A_URL="http://127.0.0.1:$REF_A_PORT"
REF_B_URL="http://127.0.0.1:$REF_B_PORT"
REF_A_DATA="$E2E_WORK/ref-a"
REF_B_DATA="$E2E_WORK/ref-b"
OURS_DATA="$E2E_WORK/ours-data"
# later assignments win in env(1): our data dir and a service DID per port
ours_env+=(PDS_DATA_DIRECTORY="$OURS_DATA" PDS_SERVICE_DID="did:web:localhost%3A$OURS_PORT")

ref_up() { # data port [external plc]
  local extra=()
  [[ -n "${3:-}" ]] && extra=(REFPDS_PLC_URL="$3")
  env REFPDS_DATA="$1" REFPDS_PORT="$2" REFPDS_SERVICE_DID="did:web:localhost%3A$2" "${extra[@]}" \
    "$REFPDS_DIR/start.sh" --reset >/dev/null
}
ref_down() { REFPDS_DATA="$1" "$REFPDS_DIR/stop.sh" 2>/dev/null || true; }

cleanup() {
  ours_stop
  ref_down "$REF_B_DATA"
  ref_down "$REF_A_DATA" # owns the PLC stub: last
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mig() { node22 "$E2E_DIR/migrate.mjs" "$@"; }
jget() { node22 -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))[process.argv[2]])' "$1" "$2"; }
ref_token() { # data dir: a command printing the reference's PLC token
  echo "'$REFPDS_DIR/node.sh' '$E2E_DIR/migrate.mjs' ref-plc-token --db '$1/pds/account.sqlite' --did \"\$MIGRATE_DID\""
}
# ours prints the token of `pds account plc-token` on its last line
ours_token() { echo "env ${ours_env[*]:1} '$OURS_BIN' account plc-token"; }

setup() {
  mkdir -p "$E2E_WORK"
  : >"$E2E_WORK/ours.log" # this run's log only
  refpds_copy
  "$REFPDS_DIR/start.sh" --install
  for p in "$REF_A_PORT" "$REF_B_PORT" "$REFPDS_PLC_PORT" "$OURS_PORT"; do
    port_free "$p" || { log "port $p is taken; see the overrides in $0 and lib.sh"; exit 2; }
  done
  ((REF_ONLY)) || ours_build
  if [[ "$WHAT" != api ]]; then goat_build; fi
  REFPDS_PLC_PORT="$REFPDS_PLC_PORT" ref_up "$REF_A_DATA" "$REF_A_PORT"
  ref_up "$REF_B_DATA" "$REF_B_PORT" "$PLC_URL"
  ((REF_ONLY)) || ours_start
  log "reference A $REF_A_URL, reference B $REF_B_URL, ours $OURS_URL, PLC $PLC_URL; work in $E2E_WORK"
}

goat_build() {
  if [[ -n "${GOAT_BIN:-}" ]]; then return; fi
  local src="${GOAT_SRC:-}"
  if [[ -z "$src" ]]; then
    for d in "$E2E_DIR/goat" "$ROOT/../shared/tools/goat/src"; do
      [[ -f "$d/account_migrate.go" ]] && { src="$d"; break; }
    done
  fi
  [[ -n "$src" ]] || { log "no goat source (set GOAT_BIN or GOAT_SRC)"; exit 2; }
  GOAT_BIN="$E2E_WORK/goat"
  log "building goat from $src"
  local tmp
  tmp="$(mktemp -d "$E2E_WORK/goat-src.XXXXXX")"
  cp -r "$src/." "$tmp/"
  chmod -R u+w "$tmp"
  (cd "$tmp" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -o "$GOAT_BIN" .) || { rm -rf "$tmp"; exit 2; }
  rm -rf "$tmp"
}

rc=0
# mig_step: run migrate.mjs; exit 1 (checks failed, the move went through)
# marks the run failed and goes on; any other failure stops this flow
SUMMARY=()
mig_step() { # label args...
  local label="$1" r=0
  shift
  mig "$@" || r=$?
  case "$r" in
    0) SUMMARY+=("ok      $label") ;;
    1) SUMMARY+=("FAILED  $label: moved, but some checks failed (see above)") ;;
    *) SUMMARY+=("FAILED  $label: stopped at the step marked FAIL above") ;;
  esac
  ((r == 0)) && return 0
  rc=1
  ((r == 1))
}

run_api() {
  local st="$E2E_WORK/api.json" mid="$OURS_URL" midtok
  ((REF_ONLY)) || midtok="$(ours_token)"
  if ((REF_ONLY)); then mid="$REF_B_URL"; midtok="$(ref_token "$REF_B_DATA")"; fi
  log "api: seed on reference A"
  mig seed --pds "$REF_A_URL" --state "$st" || return 1
  log "api: reference A -> $mid"
  mig_step "api: reference A -> $mid" move --state "$st" --to "$mid" --plc "$PLC_URL" --token-cmd "$(ref_token "$REF_A_DATA")" \
    --new-kind "$( ((REF_ONLY)) && echo ref || echo ours)" || return 1
  ((REF_ONLY)) && return 0
  log "api: ours -> reference B"
  mig_step "api: ours -> reference B" move --state "$st" --to "$REF_B_URL" --plc "$PLC_URL" --token-cmd "$midtok" --new-kind ref
}

# goat_move state from-url to-url token-cmd kind-of-new-pds
goat_move() {
  local st="$1" from="$2" to="$3" tokcmd="$4" kind="$5" did handle password email token
  did="$(jget "$st" did)"
  handle="$(jget "$st" handle)"
  password="$(jget "$st" password)"
  email="$(jget "$st" email)"
  mig snapshot --state "$st" --out "$st.before" || return 1
  local gh="$E2E_WORK/goat-home" # goat keeps its session under $HOME
  rm -rf "$gh"
  mkdir -p "$gh"
  local goat=(env HOME="$gh" ATP_PLC_HOST="$PLC_URL" "$GOAT_BIN")
  goat_fail() { SUMMARY+=("FAILED  goat: $from -> $to: $1"); log "goat: $1"; return 1; }
  "${goat[@]}" account login -u "$did" -p "$password" --pds-host "$from" || { goat_fail "account login failed"; return 1; }
  "${goat[@]}" account plc request-token || { goat_fail "account plc request-token failed"; return 1; }
  token="$(MIGRATE_DID="$did" bash -c "$tokcmd" | tail -n 1)"
  "${goat[@]}" account migrate --pds-host "$to" --new-handle "$handle" --new-password "$password" \
    --new-email "$email" --plc-token "$token" || { goat_fail "account migrate failed"; return 1; }
  mig_step "goat: $from -> $to" verify --state "$st" --to "$to" --snapshot "$st.before" --plc "$PLC_URL" --tool goat --new-kind "$kind"
}

run_goat() {
  local st="$E2E_WORK/goat.json" mid="$OURS_URL" midtok kind=ours
  ((REF_ONLY)) || midtok="$(ours_token)"
  if ((REF_ONLY)); then mid="$REF_B_URL"; midtok="$(ref_token "$REF_B_DATA")"; kind=ref; fi
  log "goat: seed on reference A"
  mig seed --pds "$REF_A_URL" --state "$st" --records 60 --blobs 3 --blob-kib 64 || return 1
  log "goat: reference A -> $mid"
  goat_move "$st" "$REF_A_URL" "$mid" "$(ref_token "$REF_A_DATA")" "$kind" || return 1
  ((REF_ONLY)) && return 0
  log "goat: ours -> reference B"
  goat_move "$st" "$OURS_URL" "$REF_B_URL" "$midtok" ref
}

setup
if [[ "$WHAT" == api || "$WHAT" == all ]]; then
  run_api || { rc=1; log "api migration: FAILED"; }
fi
if [[ "$WHAT" == goat || "$WHAT" == all ]]; then
  # ours hosts one account: after the api run it holds a deactivated one
  if [[ "$WHAT" == all ]] && ((!REF_ONLY)); then
    ours_stop
    ours_start
  fi
  run_goat || { rc=1; log "goat migration: FAILED"; }
fi
log "summary:"
for l in "${SUMMARY[@]}"; do log "  $l"; done
if ((rc == 0)); then
  log "migration: all moves and checks passed"
elif [[ -f "$E2E_WORK/ours.log" ]]; then
  log "last lines of $E2E_WORK/ours.log:"
  tail -n 20 "$E2E_WORK/ours.log" >&2
fi
exit "$rc"
