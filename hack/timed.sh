#!/usr/bin/env bash
# Run one phase of `make test` and record how long it took, for the table at the end.
#   hack/timed.sh PHASE COMMAND [ARG...]
# The command's output goes to out/ci/logs/PHASE.log and to stdout (make -O prints a phase's output
# in one piece when it ends). One line is appended to $SUSTAINDIFFUSION_TIMINGS (default
# out/ci/timings.tsv): phase, start and end (epoch seconds), exit status, and pytest's summary line
# when the phase ran pytest. The command's exit status is this script's.
set -uo pipefail
phase=$1
shift
cd "$(dirname "$0")/.."
timings=${SUSTAINDIFFUSION_TIMINGS:-$PWD/out/ci/timings.tsv}
logs=$PWD/out/ci/logs
mkdir -p "$logs" "$(dirname "$timings")"
log=$logs/$phase.log
started=$(date +%s)
"$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
ended=$(date +%s)
# pytest's last summary line, e.g. "==== 12 passed, 1 skipped in 80.1s ====" -> "12 passed, 1 skipped"
summary=$(grep -E '^=+ .*(passed|failed|error|skipped|no tests ran).* in [0-9.]+s' "$log" | tail -n 1 |
  sed -E 's/^=+ //; s/ in [0-9.]+s.*$//' || true)
printf '%s\t%s\t%s\t%s\t%s\n' "$phase" "$started" "$ended" "$status" "$summary" >>"$timings"
exit "$status"
