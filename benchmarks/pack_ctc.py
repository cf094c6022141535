"""Pack CTC sequences into one small lossless file, and unpack them (for a GPU machine).

The device machine of the development set-up takes at most 64 MiB of files, has no
``imagecodecs`` (the CTC TIFFs are LZW-compressed) and cannot reach ``../shared``. This packs
frames, SEG masks, TRA markers and ``man_track.txt`` of the given sequences into one
LZMA-compressed file (frames as row-wise differences, which compresses noise-dominated
microscopy ~10 % better than LZW; 16-bit frames whose values are all multiples of 256, as
Fluo-C2DL-MSC's are, stored as their 8-bit quotient). ``unpack`` writes the CTC layout back
with uncompressed TIFFs; every pixel is restored exactly (``--check`` compares).

    python benchmarks/pack_ctc.py pack ../shared/data/ctc/Fluo-N2DH-SIM+/01 --out .dev/sim.xz
    python benchmarks/pack_ctc.py unpack .dev/sim.xz --out /tmp/ctc [--check ../shared/data/ctc]
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import sys
from pathlib import Path

import numpy as np
import tifffile


def _frames(folder: Path, pattern: str) -> dict[str, np.ndarray]:
    return {f.name: tifffile.imread(f) for f in sorted(folder.glob(pattern))}


def _encode(a: np.ndarray) -> tuple[np.ndarray, dict]:
    meta = {"dtype": str(a.dtype), "factor": 1}
    if a.dtype == np.uint16 and not (a % 256).any():
        a, meta["factor"] = (a // 256).astype(np.uint8), 256
    diff = np.diff(a.astype(np.int32), axis=-1, prepend=0).astype(a.dtype)  # wraps: lossless
    return diff, meta


def _decode(diff: np.ndarray, meta: dict) -> np.ndarray:
    a = np.cumsum(diff.astype(np.int64), axis=-1) % (1 << (8 * diff.dtype.itemsize))
    return (a.astype(np.int64) * meta["factor"]).astype(meta["dtype"])


def pack(sequences: list[Path], out: Path) -> None:
    arrays, index = {}, []
    for seq in sequences:
        dataset, name = seq.parent.name, seq.name
        entry = {"dataset": dataset, "sequence": name, "files": {}}
        gt = seq.parent / f"{name}_GT"
        groups = {
            name: _frames(seq, "t*.tif"),
            f"{name}_GT/SEG": _frames(gt / "SEG", "man_seg*.tif"),
            f"{name}_GT/TRA": _frames(gt / "TRA", "man_track*.tif"),
        }
        for sub, frames in groups.items():
            for fname, a in frames.items():
                key = f"{dataset}/{sub}/{fname}"
                arrays[key], entry["files"][key] = _encode(a)
        entry["man_track"] = (gt / "TRA" / "man_track.txt").read_text()
        index.append(entry)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(index).encode() + b"\n" + buf.getvalue()
    out.write_bytes(lzma.compress(payload, preset=6))
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB, {len(arrays)} images")


def unpack(packed: Path, out: Path, check: Path | None = None) -> None:
    raw = lzma.decompress(packed.read_bytes())
    head, body = raw.split(b"\n", 1)
    index = json.loads(head)
    arrays = np.load(io.BytesIO(body))
    for entry in index:
        root = out / entry["dataset"]
        for key, meta in entry["files"].items():
            rel = key.split("/", 1)[1]
            a = _decode(arrays[key], meta)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / rel, a)
            if check is not None:
                orig = tifffile.imread(check / entry["dataset"] / rel)
                if orig.dtype != a.dtype or not np.array_equal(orig, a):
                    sys.exit(f"{rel}: unpacked image differs from {check}")
        (root / f"{entry['sequence']}_GT" / "TRA" / "man_track.txt").write_text(entry["man_track"])
        print(f"{root}: {len(entry['files'])} images")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("sequences", nargs="+", type=Path, help="CTC sequence folders (…/NN)")
    a.add_argument("--out", type=Path, required=True)
    b = sub.add_parser("unpack")
    b.add_argument("packed", type=Path)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--check", type=Path, help="compare with the original datasets' folder")
    args = p.parse_args()
    if args.cmd == "pack":
        pack(args.sequences, args.out)
    else:
        unpack(args.packed, args.out, args.check)


if __name__ == "__main__":
    main()
