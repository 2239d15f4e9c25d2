#!/usr/bin/env bash
# importRepo of a 100k-record repository: ours and the reference PDS, measured
# in the same run (time of the request, peak private memory of the server).
#
#   e2e/import-bench.sh            # ~2 min once installed (+1 min the first time: the CAR)
#   RECORDS=20000 e2e/import-bench.sh
#
# Starts the reference PDS with its PLC stub (REFPDS_PORT 2583, REFPDS_PLC_PORT
# 2582) and ours (OURS_PORT 2683) on fresh data, then runs e2e/importbench:
# one did:plc (in the stub) whose key signs a repository of RECORDS records
# (built with our repo package, cached as a CAR in E2E_WORK), createAccount
# with that DID and a service-auth token on each server (deactivated, as a
# migration's account), importRepo of the CAR, checkAccountStatus. The
# servers import one after the other; each one's RssAnon is sampled from
# /proc/PID/status every 10 ms. Prints one markdown table. Not in CI (slow).
#
# Env: E2E_WORK (/tmp/pds-e2e-import), RECORDS (100000), and lib.sh's
# REFPDS_DIR, REFPDS_PORT, REFPDS_PLC_PORT, OURS_PORT, PDS_BIN.
set -euo pipefail
export E2E_WORK="${E2E_WORK:-/tmp/pds-e2e-import}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RECORDS="${RECORDS:-100000}"
# Both servers read this name: the reference's body limit for importRepo
# (its default is far below a 34 MB CAR), ours PDS_MAX_REPO_IMPORT_SIZE.
export PDS_MAX_REPO_IMPORT_SIZE=$((512 << 20))
PLC_URL="http://localhost:$REFPDS_PLC_PORT" # a name: the reference refuses IP hosts

cleanup() {
  ours_stop
  ref_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$E2E_WORK"
: >"$E2E_WORK/ours.log"
ref_start
ours_build
ours_start
bench="$E2E_WORK/importbench"
(cd "$ROOT" && go build -o "$bench" ./e2e/importbench)
log "reference $REF_URL (pid $(ref_pid)), ours $OURS_URL (pid $OURS_PID), PLC $PLC_URL; work in $E2E_WORK"
"$bench" -records "$RECORDS" -plc "$PLC_URL" -work "$E2E_WORK" \
  -server "ours=$OURS_URL=$OURS_PID" -server "reference=$REF_URL=$(ref_pid)"
