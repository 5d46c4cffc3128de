#!/usr/bin/env bash
# Every benchmark with its default settings, one after the other, with the time each took and
# the total (under 15 minutes on 2 cores). Each script's last line is echoed; full logs go to
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
  printf '%-26s %4d s  rc=%d  %s\n' "$name" $(( $(date +%s) - start )) "$rc" "$(tail -n 1 "$LOGS/$name.log")"
}

run step_time env PYTHON="$PYTHON" STEPS="${STEPS:-3}" LOGS="$LOGS/step_time" bash benchmarks/run_all.sh
for recipe in gpo_vae grnvae; do
  for row in "415 complete" "1546 30" "10000 30" "20000 30"; do
    set -- $row
    run "roofline_${recipe}_$1x$2" "$PYTHON" benchmarks/roofline.py --recipe "$recipe" --nodes "$1" --edges-per-node "$2" --steps 3
  done
done
run scatter_backend "$PYTHON" benchmarks/scatter_backend.py --repeats 10
run data_loading "$PYTHON" benchmarks/data_loading.py --delete
run backed_training "$PYTHON" benchmarks/backed_training.py --delete
if [ -f "$PAPALEXI" ]; then
  run pairing_ot "$PYTHON" benchmarks/pairing_ot.py
else
  echo "pairing_ot: $PAPALEXI not found; running the synthetic case only"
fi
run pairing_ot_synth "$PYTHON" benchmarks/pairing_ot.py --synthetic 40000 20000
run time_to_result "$PYTHON" benchmarks/time_to_result.py --case papalexi
run gpu "$PYTHON" benchmarks/gpu.py
echo "total $(( $(date +%s) - total_start )) s; logs in $LOGS"
exit $status
