#!/usr/bin/env bash
# First call on the GPU machine (docs/models.md, session 7): code and data, the training
# throughput and inference benchmarks, then group a's runs in a process session of their own
# (they outlive the call; call2.sh collects them).   bash benchmarks/gpu/call1.sh MINUTES_A
# Needs .dev/whl and .dev/a carried (made here by benchmarks/gpu/prepare.sh).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .dev/whl/*.whl
export PYTHONPATH=/tmp/site:/tmp/src PYTHONUNBUFFERED=1
rm -rf /tmp/src && cp -r src /tmp/src  # the runs' own copy of the code
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
nproc
python3 -c "import torch; print(torch.__version__, torch.cuda.is_bf16_supported())"
python3 benchmarks/pack_ctc.py unpack .dev/a/sim_msc.xz --out /tmp/ctc
mkdir -p /tmp/runs
python3 benchmarks/bench_train_throughput.py /tmp/ctc/Fluo-N2DH-SIM+/01 --batch-sizes 16 \
    --workers 14 --steps 40 --json "$OUT/bench_train.json" 2>&1 | grep -v Warning
timeout 75 python3 -m napari_embedtrack.cli benchmark --sizes 1024 --frames 8 \
    --reference-frames 3 --json "$OUT/bench_predict.json"
setsid nohup bash benchmarks/gpu/runs.sh a "$1" /tmp/ctc /tmp/runs > /tmp/runs/a.out 2>&1 < /dev/null &
sleep 15
tail -n 3 /tmp/runs/*.log
