#!/usr/bin/env bash
# Training runs of issue #13 on one GPU, side by side (docs/models.md, session 7).
#   bash benchmarks/gpu/runs.sh GROUP MINUTES DATA OUT
# GROUP a: needs DATA/Fluo-N2DH-SIM+ and DATA/Fluo-C2DL-MSC; b: DATA/Fluo-N2DH-GOWT1 (+ SIM+).
# Each run: time-budgeted one-cycle (--schedule time), validation on plain, hard and uneven
# copies of the held-out frames every 300 steps (best checkpoint kept), 3 crop workers, cells
# of unequal brightness in half the training pairs (--cell-gain 0.5; session 9).
set -u
group=$1 minutes=$2 data=$3 out=$4
mkdir -p "$out"
et() { python3 -m napari_embedtrack.cli -v train "$@"; }
common=(--steps 100000 --schedule time --max-minutes "$minutes" --val-every 300 --workers 3 --cell-gain 0.5 --device "${DEVICE:-cuda}")
if [ "$group" = a ]; then
  et "$data/Fluo-N2DH-SIM+" "${common[@]}" --batch-size 8 --lr 5e-4 --val-frames 59:65 \
     --out "$out/sim" --name Fluo-N2DH-SIM+ > "$out/sim.log" 2>&1 &
  et "$data/Fluo-C2DL-MSC" "${common[@]}" --init Fluo-N2DH-GOWT1 --scale 0.5 --batch-size 8 \
     --lr 3e-4 --val-frames 43:48 --out "$out/msc" --name Fluo-C2DL-MSC > "$out/msc.log" 2>&1 &
  et "$data/Fluo-C2DL-MSC" "${common[@]}" --scale 0.5 --batch-size 8 --lr 5e-4 \
     --val-frames 43:48 --out "$out/msc_scratch" --name Fluo-C2DL-MSC > "$out/msc_scratch.log" 2>&1 &
else
  et "$data/Fluo-N2DH-GOWT1" "${common[@]}" --init Fluo-N2DH-SIM+ --batch-size 8 --lr 3e-4 \
     --val-frames 33:34 --out "$out/gowt1" --name Fluo-N2DH-GOWT1 > "$out/gowt1.log" 2>&1 &
  et "$data/Fluo-N2DH-SIM+" "$data/Fluo-N2DH-GOWT1" "${common[@]}" --scale 1 --batch-size 8 \
     --lr 5e-4 --val-frames Fluo-N2DH-SIM+=59:65 --val-frames Fluo-N2DH-GOWT1=33:34 \
     --out "$out/nuclei" --name nuclei > "$out/nuclei.log" 2>&1 &
fi
wait
