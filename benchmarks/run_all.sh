#!/usr/bin/env bash
# The whole step-time table of BENCHMARKS.md: one benchmarks/step_time.py process per row (so
# each peak RSS is its own), then the table as markdown with the upstream GPO-VAE anchors.
#
#   bash benchmarks/run_all.sh                 # ~2.5 min on 2 cores (~3 min with STEPS=5)
#   STEPS=5 bash benchmarks/run_all.sh         # more timed steps per row (default 3)
#   ONLY="415:complete 1546:30" bash benchmarks/run_all.sh
#
# Environment: PYTHON (default .venv/bin/python), STEPS (3), WARMUP (1), MAX_GB (20, passed as
# --max-gb), ROW_TIMEOUT (seconds per row, default 300), LOGS (folder for each row's full
# output, default a fresh temp folder), EXTRA (more step_time.py options for every row).
# Batch 512, 5 particles, K = 5 alignment hops, 2,000 genes, artifact module on.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
STEPS=${STEPS:-3}
WARMUP=${WARMUP:-2}
MAX_GB=${MAX_GB:-20}
ROW_TIMEOUT=${ROW_TIMEOUT:-300}
LOGS=${LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/grnvae_step_time.XXXXXX")}
EXTRA=${EXTRA:-}
mkdir -p "$LOGS"
# V:edges-per-node, in table order
ROWS=${ONLY:-"415:complete 1546:10 1546:30 1546:100 1546:complete 4000:10 4000:30 4000:100 4000:complete 10000:10 10000:30 10000:100 20000:10 20000:30 20000:100"}

start=$(date +%s)
for row in $ROWS; do
  V=${row%%:*}; K=${row#*:}
  log="$LOGS/V${V}_K${K}.log"
  echo ">> V=$V edges/node=$K" >&2
  # shellcheck disable=SC2086
  timeout "$ROW_TIMEOUT" "$PYTHON" benchmarks/step_time.py --nodes "$V" --edges-per-node "$K" \
    --genes 2000 --batch 512 --particles 5 --hops 5 --steps "$STEPS" --warmup "$WARMUP" \
    --max-gb "$MAX_GB" $EXTRA >"$log" 2>&1
  rc=$?
  [ $rc -eq 124 ] && echo "did not fit: over ROW_TIMEOUT=${ROW_TIMEOUT}s" >>"$log"
  tail -n 1 "$log" >&2
done
echo "total $(( $(date +%s) - start )) s; logs in $LOGS" >&2

"$PYTHON" - "$LOGS" $ROWS <<'EOF'
import re, sys
from pathlib import Path

logs, rows = Path(sys.argv[1]), sys.argv[2:]
# upstream GPO-VAE (dense formulation), one step on this 2-core machine class
anchors = {(415, "complete"): (1.95, None), (1546, "complete"): (9.9, 4.6), (4000, "complete"): (65.0, 17.5)}
print("| V | edges/node | E | step (s), median | min-max (s) | fwd / bwd / Adam (s) | RSS before step (GB) | peak RSS (GB) | upstream GPO-VAE (complete) | speed-up |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for row in rows:
    V, K = row.split(":")
    V = int(V)
    text = (logs / f"V{V}_K{K}.log").read_text() if (logs / f"V{V}_K{K}.log").exists() else ""
    res = [l for l in text.splitlines() if l.startswith("result: ")]
    kv = dict(t.split("=", 1) for t in res[-1][8:].split()) if res else {}
    anchor = anchors.get((V, "complete"))
    up = "-" if anchor is None else f"{anchor[0]:g} s" + ("" if anchor[1] is None else f", {anchor[1]:g} GB")
    if kv.get("status") != "ok":
        why = [l for l in text.splitlines() if l.startswith("did not fit")]
        reason = why[-1][len("did not fit: "):] if why else (text.strip().splitlines() or ["no output"])[-1]
        E = V * V if K == "complete" else V * (int(K) + 1)
        print(f"| {V:,} | {K} | {E:,} | not run: {reason} | | | | | {up} | |")
        continue
    s = float(kv["step_s"])
    speed = "-" if anchor is None else f"{anchor[0] / s:.1f}x"
    print(f"| {V:,} | {K} | {int(kv['E']):,} | {s:.3f} | {float(kv['min_s']):.3f}-{float(kv['max_s']):.3f} | "
          f"{float(kv['forward_s']):.2f} / {float(kv['backward_s']):.2f} / {float(kv['optim_s']):.2f} | "
          f"{float(kv['rss_before_mb']) / 1024:.2f} | {float(kv['peak_rss_mb']) / 1024:.2f} | {up} | {speed} |")
EOF
