#!/usr/bin/env bash
# Run one phase of `make test` and record how long it took, for the table at the end.
#   hack/timed.sh PHASE COMMAND [ARG...]
# The command's output goes to out/ci/logs/PHASE.log and to stdout (make -O prints a phase's output
# in one piece when it ends). One line is appended to $SUSTAINDIFFUSION_TIMINGS (default
# out/ci/timings.tsv): phase, start and end (epoch seconds), exit status, pytest's summary line when
# the phase ran pytest, and the CPU seconds (user + system) the phase and every process it waited
# for used: what a phase costs whatever else runs beside it. The command's exit status is this
# script's.
set -uo pipefail
phase=$1
shift
cd "$(dirname "$0")/.."
timings=${SUSTAINDIFFUSION_TIMINGS:-$PWD/out/ci/timings.tsv}
logs=$PWD/out/ci/logs
mkdir -p "$logs" "$(dirname "$timings")"
log=$logs/$phase.log
cpu=$logs/$phase.cpu
started=$(date +%s)
/usr/bin/time -f '%U %S' -o "$cpu" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
cpu_seconds=$(awk 'END { if (NF >= 2) printf "%.0f", $(NF-1) + $NF }' "$cpu" 2>/dev/null || true)
ended=$(date +%s)
# pytest's last summary line, e.g. "==== 12 passed, 1 skipped in 80.1s ====" -> "12 passed, 1 skipped"
summary=$(grep -E '^=+ .*(passed|failed|error|skipped|no tests ran).* in [0-9.]+s' "$log" | tail -n 1 |
  sed -E 's/^=+ //; s/ in [0-9.]+s.*$//' || true)
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$started" "$ended" "$status" "$summary" "$cpu_seconds" >>"$timings"
exit "$status"
