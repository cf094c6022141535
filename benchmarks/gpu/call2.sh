#!/usr/bin/env bash
# Second call (right after call1.sh, on the same warm machine): GOWT1 data, group b's runs,
# then wait for all runs (or SECONDS_LEFT) and pack them into $OUT.
#   bash benchmarks/gpu/call2.sh SECONDS_LEFT MINUTES_B
# Needs .dev/whl and .dev/b carried (made here by benchmarks/gpu/prepare.sh).
set -u
deadline=$(( $(date +%s) + $1 ))
export PYTHONPATH=/tmp/site:/tmp/src PYTHONUNBUFFERED=1
if [ ! -d /tmp/src ]; then
  echo "a fresh machine: group a's runs are gone"
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .dev/whl/*.whl
  cp -r src /tmp/src
fi
mkdir -p /tmp/runs
python3 benchmarks/pack_ctc.py unpack .dev/b/gowt1.xz --out /tmp/ctc
setsid nohup bash benchmarks/gpu/runs.sh b "$2" /tmp/ctc /tmp/runs > /tmp/runs/b.out 2>&1 < /dev/null &
sleep 30
while pgrep -f "cli -v train" > /dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 5; done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
grep -h "step .*validation\|Error\|error" /tmp/runs/*.log | tail -n 40
python3 benchmarks/gpu/pack_runs.py "$OUT" /tmp/runs/sim /tmp/runs/msc /tmp/runs/msc_scratch \
    /tmp/runs/gowt1 /tmp/runs/nuclei
ls -la "$OUT"
