"""Where do a result's extra tracks come from? Each predicted track is matched to the true
track whose markers (``TRA``) it covers most often, and the tracks beyond one per true track
are sorted into kinds: a later piece of a true track without parent (the cell lost and
found again: a gap, or a second piece of the cell), a later piece with a parent (a false
division), and tracks on no true cell (debris, pieces of cells off the marker).

Reads ``CACHE/<style>.npz`` and ``CACHE/GT`` written by ``benchmarks/cache_outputs.py`` and
applies the model's card clean-up (or ``--variant``, a name from ``ab_postprocess.VARIANTS``):

    python benchmarks/track_errors.py --model Fluo-N2DH-GOWT1 --cache cache/gowt1 --style hard
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_embedtrack.engine.modelfile import load_model
from napari_embedtrack.engine.pipeline import default_cluster_params, retrack
from napari_embedtrack.engine.predict import load_outputs
from napari_embedtrack.engine.progress import run
from napari_embedtrack.io import ctc


def _best_truth(labels: np.ndarray, markers: np.ndarray) -> dict[int, int]:
    """Predicted track -> the true track it covers in most of its frames (0: none)."""
    votes: dict[int, list[int]] = {}
    for p, g in zip(labels, markers, strict=True):
        for pid in np.unique(p[p > 0]).tolist():
            m = g[p == pid]
            m = m[m > 0]
            votes.setdefault(pid, []).append(int(np.bincount(m).argmax()) if m.size else 0)
    out = {}
    for pid, v in votes.items():
        hits = [g for g in v if g]
        out[pid] = Counter(hits).most_common(1)[0][0] if hits else 0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--style", default="hard")
    p.add_argument("--variant", help="a variant of benchmarks/ab_postprocess.py (default: card)")
    args = p.parse_args()
    card = load_model(args.model, device="cpu").card
    params = default_cluster_params(card)
    if args.variant:
        import ab_postprocess as ab

        params = ab.params_for(ab.bare(params), card.cell_size, ab.VARIANTS[args.variant])
    cache = Path(args.cache)
    result = run(retrack(load_outputs(cache / f"{args.style}.npz"), params))
    labels, lineage = result.labels, result.lineage
    with tempfile.TemporaryDirectory() as tmp:
        ctc.write_results(Path(tmp) / "RES", labels, lineage)
        scores = ctc.score_results(cache / "GT", Path(tmp) / "RES")
    gt = ctc.read_ground_truth(cache / "GT")
    truth_of = _best_truth(labels, gt.tra)
    table = {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in lineage}
    diameter = card.cell_diameter
    kinds: Counter = Counter()
    gaps = []
    for pid, g in truth_of.items():
        if not g:
            continue
        earlier = [q for q, h in truth_of.items() if h == g and table[q][0] < table[pid][0]]
        if not earlier:
            kinds["first piece of a true track"] += 1
        elif table[pid][2]:
            kinds["later piece with a parent (false division)"] += 1
        else:
            kinds["later piece without parent"] += 1
            old = max(earlier, key=lambda q: table[q][1])
            a = labels[table[old][1]] == old
            b = labels[table[pid][0]] == pid
            dist = np.linalg.norm(
                np.subtract(ndimage.center_of_mass(a), ndimage.center_of_mass(b))
            )  # fmt: skip
            gaps.append((table[pid][0] - table[old][1] - 1, dist / diameter))
    stray = [k for k, g in truth_of.items() if not g]
    print(f"{cache.name} {args.style}: {len(table)} tracks for {scores['gt_tracks']} true ones;"
          f" SEG {scores['SEG']:.3f} TRA {scores['TRA']:.3f} CT {scores['CT']:.3f}")  # fmt: skip
    for kind, n in sorted(kinds.items()):
        print(f"  {kind}: {n}")
    if gaps:
        print("  later pieces without parent: (missing frames, centroid distance in diameters;"
              " negative frames: both pieces at once)")  # fmt: skip
        print("   ", ", ".join(f"({n}, {d:.2f})" for n, d in sorted(gaps)))
    print(f"  tracks on no true cell: {len(stray)}")
    for k in sorted(stray):
        s, e, parent = table[k]
        area = np.median([(labels[t] == k).sum() for t in range(s, e + 1)]) / card.cell_size
        print(f"    track {k}: frames {s}-{e}, median area {area:.2f} of the median cell,"
              f" parent {parent}")  # fmt: skip


if __name__ == "__main__":
    main()
