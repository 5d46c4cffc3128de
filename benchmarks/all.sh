#!/usr/bin/env bash
# Every benchmark with its default settings, one after the other, with the time each took and
# the total (under 10 minutes on 2 cores). Each script's last line is echoed; full logs go to
# LOGS (default a fresh temp folder).
#
#   bash benchmarks/all.sh
#
# Environment: PYTHON (default .venv/bin/python), LOGS, STEPS (passed to run_all.sh, default 3).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
LOGS=${LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/grnvae_benchmarks.XXXXXX")}
mkdir -p "$LOGS"
PAPALEXI=../shared/data/perturbseq/papalexi2021_thp1_subset.h5ad
total_start=$(date +%s)
status=0

run() {  # name, command...
  local name=$1; shift
  local start rc
  start=$(date +%s)
  "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && status=1
  printf '%-18s %4d s  rc=%d  %s\n' "$name" $(( $(date +%s) - start )) "$rc" "$(tail -n 1 "$LOGS/$name.log")"
}

run step_time env PYTHON="$PYTHON" STEPS="${STEPS:-3}" LOGS="$LOGS/step_time" bash benchmarks/run_all.sh
run scatter_backend "$PYTHON" benchmarks/scatter_backend.py --repeats 10
run data_loading "$PYTHON" benchmarks/data_loading.py --delete
run backed_training "$PYTHON" benchmarks/backed_training.py --delete
if [ -f "$PAPALEXI" ]; then
  run pairing_ot "$PYTHON" benchmarks/pairing_ot.py
else
  echo "pairing_ot: $PAPALEXI not found; running the synthetic case only"
fi
run pairing_ot_synth "$PYTHON" benchmarks/pairing_ot.py --synthetic 40000 20000
echo "total $(( $(date +%s) - total_start )) s; logs in $LOGS"
exit $status
