#!/usr/bin/env bash
# Run e2e/flow.mjs (@atproto/api client flow) against the reference PDS and
# our server side by side, print the comparison, stop both.
#
#   e2e/run.sh [--verbose]        exit 0: no unexpected difference; 1: some; other: setup failed
#
# Starts the reference from a writable copy of ../shared/refpds (REFPDS_DIR,
# default /tmp/refpds; first install 2-4 min), builds ./cmd/pds and runs it on
# OURS_PORT (2683) with the reference's PLC stub, fresh data each run.
# Scratch files (our data, logs, flow.json) go to E2E_WORK (/tmp/pds-e2e).
# See e2e/lib.sh for the other overrides and e2e/README.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cleanup() {
  ours_stop
  ref_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ours_build
ref_start
ours_start
log "reference $REF_URL (pid $(ref_pid)), ours $OURS_URL (pid $OURS_PID)"

set +e
node22 "$E2E_DIR/flow.mjs" --ref "$REF_URL" --ours "$OURS_URL" --json "$E2E_WORK/flow.json" "$@"
rc=$?
set -e
log "full answers of both servers: $E2E_WORK/flow.json"
exit "$rc"
