"""A/B-test clustering acceptance and the track clean-up rules on cached network outputs.

Reads ``CACHE/<style>.npz`` and ``CACHE/GT`` written by ``benchmarks/cache_outputs.py``,
re-clusters and re-links with each variant (no network run), writes CTC results and scores
them with py-ctcmetrics: SEG, DET, TRA and the lineage measures CT, TF, BC(1), CCA, plus the
number of tracks against the truth. Sizes are given as fractions of the median cell area of
the model's card (``cell_size``); one JSON line per cache, style and variant, then a
markdown table.

    python benchmarks/ab_postprocess.py --model Fluo-N2DH-SIM+ --cache cache/sim \\
        --styles hard plain
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from napari_embedtrack.engine.cluster import ClusterParams, grow
from napari_embedtrack.engine.modelfile import disc_diameter, load_model
from napari_embedtrack.engine.pipeline import default_cluster_params, retrack
from napari_embedtrack.engine.predict import load_outputs
from napari_embedtrack.engine.progress import run
from napari_embedtrack.io import ctc

# name -> overrides; fractions (``*_frac``) are of the card's median cell area, and
# ``gap_frac`` is of the median cell diameter
VARIANTS: dict[str, dict] = {
    "shipped (gain rule)": {"acceptance": "gain"},
    "proposal rule": {},
    "+ fragments 0.2": {"fragment_frac": 0.2},
    "+ divisions 0.2": {"fragment_frac": 0.2, "daughter_frac": 0.2},
    "+ gaps 1.0": {"fragment_frac": 0.2, "daughter_frac": 0.2, "gap_frac": 1.0},
    "+ drop single": {
        "fragment_frac": 0.2,
        "daughter_frac": 0.2,
        "gap_frac": 1.0,
        "drop_single": True,
    },
    # the daughter size test against real divisions (SIM+ daughters can be small at birth)
    "fragments 0.2, divisions one-frame rule only": {"fragment_frac": 0.2, "daughter_frac": 0.0},
    "fragments 0.2, divisions 0.1": {"fragment_frac": 0.2, "daughter_frac": 0.1},
    "fragments 0.35, divisions one-frame rule only": {"fragment_frac": 0.35, "daughter_frac": 0.0},
    "fragments 0.2, divisions one-frame, gaps": {
        "fragment_frac": 0.2,
        "daughter_frac": 0.0,
        "gap_frac": 1.0,
    },
    "fragments 0.2, divisions one-frame, gaps, drop single": {
        "fragment_frac": 0.2,
        "daughter_frac": 0.0,
        "gap_frac": 1.0,
        "drop_single": True,
    },
}
_FINAL = VARIANTS["fragments 0.2, divisions one-frame, gaps, drop single"]
# the clustering thresholds on top of the shipped clean-up (dim cells: lower thresholds keep
# more of a cell's faint border)
for _key, _values in (("seed_threshold", (0.2, 0.3, 0.4, 0.5)), ("score_threshold", (0.1, 0.3))):
    for _v in _values:
        VARIANTS[f"final, {_key} {_v}"] = {**_FINAL, _key: _v}
# session 8: gaps of several frames (dim cells missed for a few frames) and small isolated
# tracks (debris, pieces of cells); ``small_frac`` is of the median cell area
for _k in (3, 5):
    VARIANTS[f"final, gaps of up to {_k} frames"] = {**_FINAL, "max_gap": _k}
for _f in (0.25, 0.35):
    VARIANTS[f"final, small tracks {_f}"] = {**_FINAL, "small_frac": _f}
    VARIANTS[f"final, gaps of up to 5 frames, small tracks {_f}"] = {
        **_FINAL, "max_gap": 5, "small_frac": _f
    }  # fmt: skip
# session 9: the clustering thresholds again, on top of today's defaults (gaps of up to 5
# frames, small tracks 0.35), for the ``uneven`` proxy's dim cells
_NOW = VARIANTS["final, gaps of up to 5 frames, small tracks 0.35"]
for _key, _values in (("seed_threshold", (0.3, 0.4, 0.5)), ("score_threshold", (0.1, 0.3))):
    for _v in _values:
        VARIANTS[f"now, {_key} {_v}"] = {**_NOW, _key: _v}
# session 10: the small-track rule's reference area, the median of all cell areas (pulled
# down when a dim movie gives many small pieces) or the area-weighted median, and tracks on
# the frame's edge judged by their largest area (``edge_frac``; 0 keeps them all)
for _f in (0.35, 0.5):
    VARIANTS[f"now, small tracks {_f} of the pixel-weighted median"] = {
        **_NOW, "small_frac": _f, "small_track_reference": "pixels"
    }  # fmt: skip
    for _e in (0.175, 0.35):
        VARIANTS[f"now, small tracks {_f} of the pixel-weighted median, edge {_e}"] = {
            **_NOW, "small_frac": _f, "small_track_reference": "pixels",
            "small_track_edge_fraction": _e,
        }  # fmt: skip
# the seediness threshold on top of the session-10 clean-up (models fine-tuned with cells of
# unequal brightness find small pieces on dim frames)
_S10 = VARIANTS["now, small tracks 0.35 of the pixel-weighted median, edge 0.35"]
for _v in (0.3, 0.4, 0.5, 0.6):
    VARIANTS[f"session 10, seed_threshold {_v}"] = {**_S10, "seed_threshold": _v}
VARIANTS["session 10 default"] = _S10  # the clean-up every model shipped with, sessions 10-14
# session 11: masks grow into the dim rim of their cell (ClusterParams.grow_threshold)
# (in every frame before linking), or grown once the tracks are final ("after the clean-up":
# linking and the clean-up rules see the masks as clustered)
for _v in (0.1, 0.2, 0.3):
    VARIANTS[f"default, grow {_v}"] = {**_S10, "grow_threshold": _v}
    VARIANTS[f"default, grow {_v} after the clean-up"] = {**_S10, "grow_after": _v}
# session 15: a track broken between two consecutive frames (the tracking offsets missed the
# link; no frame missing) joined like a gap, within the same distance
VARIANTS["session 10 default, breaks joined"] = {**_S10, "min_gap": 0}
# a division undone when its smaller daughter is below this fraction of the larger one
for _v in (0.2, 0.25, 0.3):
    VARIANTS[f"breaks joined, daughters balanced {_v}"] = {
        **VARIANTS["session 10 default, breaks joined"], "min_daughter_ratio": _v
    }  # fmt: skip
VARIANTS["session 15 default"] = VARIANTS["breaks joined, daughters balanced 0.25"]
VARIANTS["default"] = {**VARIANTS["session 15 default"], "grow_dim": 0.65}  # what models ship with
# session 16: new movies' masks were too small on dim cells (issue #13): a lower seediness
# threshold takes in more of each cell; "grow" adds pixels next to a mask after the clean-up
# ("shipped" is what shipped in session 16, the session-15 clean-up: the rows in
# docs/models.md stay reproducible)
for _v in (0.3, 0.35, 0.4, 0.45, 0.55, 0.6):
    VARIANTS[f"shipped, seediness {_v}"] = {**VARIANTS["session 15 default"], "seed_threshold": _v}
for _v in (0.2, 0.3):
    VARIANTS[f"shipped, grow {_v} after the clean-up"] = {
        **VARIANTS["session 15 default"], "grow_after": _v
    }  # fmt: skip
# session 17: each cell's mask takes the connected pixels whose seediness exceeds a fraction of
# the cell's own median seediness (dim cells reach their edge, bright ones keep their masks),
# added after the clean-up (ClusterParams.grow_dim)
for _v in (0.55, 0.65, 0.75):
    VARIANTS[f"session 15 default, dim rims {_v}"] = {
        **VARIANTS["session 15 default"], "grow_dim": _v
    }  # fmt: skip
# with the rims, a lower seediness threshold for GOWT1 (its card: 0.6) checked again
for _v in (0.5, 0.55):
    VARIANTS[f"default, seediness {_v}"] = {**VARIANTS["default"], "seed_threshold": _v}
METRICS = (*ctc.TECHNICAL_METRICS, *ctc.LINEAGE_METRICS)


def bare(params: ClusterParams) -> ClusterParams:
    """``params`` with every track clean-up rule off (the variants add them back)."""
    return replace(
        params, fragment_size=0, min_daughter_size=-1, min_daughter_ratio=0.0, gap_distance=0.0,
        max_gap=1, min_gap=1,
        drop_single=False, small_track_fraction=0.0, small_track_reference="count",
        small_track_edge_fraction=0.0, grow_dim=0.0,
    )  # fmt: skip


def params_for(base: ClusterParams, cell_size: float, spec: dict) -> ClusterParams:
    """ClusterParams from a variant spec (fractions of the cell size resolved to pixels)."""
    kw = dict(spec)
    kw.pop("grow_after", None)  # applied to the finished tracks (main)
    frag = kw.pop("fragment_frac", 0.0)
    daughter = kw.pop("daughter_frac", None)
    gap = kw.pop("gap_frac", 0.0)
    small = kw.pop("small_frac", 0.0)
    diameter = float(disc_diameter(cell_size))
    return replace(
        base,
        acceptance=kw.pop("acceptance", "proposal"),
        fragment_size=round(frag * cell_size),
        min_daughter_size=-1 if daughter is None else round(daughter * cell_size),
        gap_distance=gap * diameter,
        small_track_fraction=small,
        **kw,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--styles", nargs="+", default=["hard"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--cell-size", type=float, help="median cell area (default: the card's)")
    args = p.parse_args()
    card = load_model(args.model, device="cpu").card
    cell_size = args.cell_size or card.cell_size
    if not cell_size:
        raise SystemExit("the model card has no cell_size: pass --cell-size")
    base = bare(default_cluster_params(card))
    cache = Path(args.cache)
    rows = []
    for style in args.styles:
        outputs = load_outputs(cache / f"{style}.npz")
        for name in args.variants:
            params = params_for(base, cell_size, VARIANTS[name])
            result = run(retrack(outputs, params))
            grow_after = VARIANTS[name].get("grow_after", 0.0)
            if grow_after:
                for t, out in enumerate(outputs):
                    result.labels[t] = grow(result.labels[t], out.seediness, grow_after)
            with tempfile.TemporaryDirectory() as tmp:
                res = Path(tmp) / "RES"
                ctc.write_results(res, result.labels, result.lineage)
                scores = ctc.score_results(cache / "GT", res)
            row = {
                "data": cache.name,
                "style": style,
                "variant": name,
                **{k: None if scores[k] is None else round(scores[k], 3) for k in METRICS},
                "tracks": scores["tracks"],
                "gt_tracks": scores["gt_tracks"],
                "false_divisions": scores.get("divisions_false"),
                "params": asdict(params),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(
        "| data | style | variant | "
        + " | ".join(METRICS)
        + " | tracks (truth) | false divisions |"
    )
    print("|---" * (len(METRICS) + 5) + "|")
    for r in rows:
        vals = " | ".join("-" if r[k] is None else f"{r[k]:.3f}" for k in METRICS)
        print(
            f"| {r['data']} | {r['style']} | {r['variant']} | {vals} | "
            f"{r['tracks']} ({r['gt_tracks']}) | {r['false_divisions']} |"
        )


if __name__ == "__main__":
    main()
