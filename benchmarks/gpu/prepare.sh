#!/usr/bin/env bash
# Run HERE (the CPU machine), before the GPU calls: builds .dev/ (git-ignored), what
# call1.sh and call2.sh read on the GPU machine, which has no network, no imagecodecs and no
# ../shared (docs/models.md, "GPU runs"):
#   .dev/whl/      py-ctcmetrics (pure Python; validation's TRA/CT), for the machine's Python
#   .dev/a/        SIM+ 01 and MSC 01, packed losslessly (benchmarks/pack_ctc.py): call1.sh
#   .dev/b/        GOWT1 01: call2.sh
# Each call carries its part: run(command="bash benchmarks/gpu/call1.sh 8",
# carry=[".dev/whl", ".dev/a"]) then run(command="bash benchmarks/gpu/call2.sh 420 6",
# carry=[".dev/whl", ".dev/b"]): the tracked tree (~21 MB) and one part stay under 64 MiB.
#   bash benchmarks/gpu/prepare.sh [CTC_DATA_FOLDER]
set -euo pipefail
data=${1:-../shared/data/ctc}
rm -rf .dev && mkdir -p .dev/whl .dev/a .dev/b
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 -d .dev/whl "py-ctcmetrics>=1.3"
python benchmarks/pack_ctc.py pack "$data/Fluo-N2DH-SIM+/01" "$data/Fluo-C2DL-MSC/01" \
    --out .dev/a/sim_msc.xz
python benchmarks/pack_ctc.py pack "$data/Fluo-N2DH-GOWT1/01" --out .dev/b/gowt1.xz
for part in a b; do
    tree=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f 1)
    size=$(du -cb .dev/whl ".dev/$part" | tail -n 1 | cut -f 1)
    echo "call with .dev/$part: $(( (tree + size) / 1048576 )) MiB of 64"
done
