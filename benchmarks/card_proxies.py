"""Write a shipped model's new-movie proxy figures into its card (``validation.proxies``).

The issue's targets are on movies the project does not have, so every shipped card carries
the figures that stand in for them: the training movie as filmed (``plain``), dimmed
(``hard``) and with cells of unequal brightness (``uneven``), scored with the official CTC
measures after the default clean-up. ``embedtrack models`` prints them. The figures come
from ``ab_postprocess.py``'s ``default`` rows on outputs cached by ``cache_outputs.py`` with
the card's own settings (TTA, smoothing); the script refuses a cache made otherwise.
``--held-out`` replaces the card's ``ctc`` block (held-out frames) with a new
``evaluate_model.py`` measurement.

    python benchmarks/cache_outputs.py --model M --data ../shared/data/ctc/D [--tta] \\
        --styles plain hard uneven --out C
    python benchmarks/ab_postprocess.py --model M --cache C --styles plain hard uneven \\
        --variants default > ab.txt
    python benchmarks/card_proxies.py --model M --cache C --ab ab.txt \\
        --measured "session 16, AMX CPU" \\
        [--held-out ev.json --held-out-settings "..." --held-out-command "..."]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from napari_embedtrack.engine.modelfile import SHIPPED_DIR, read_card, save_card
from napari_embedtrack.engine.pipeline import default_cluster_params
from napari_embedtrack.io import ctc

STYLES = ("plain", "hard", "uneven")
KEYS = (*ctc.TECHNICAL_METRICS, *ctc.LINEAGE_METRICS)


class CardError(ValueError):
    pass


def read_rows(ab_text: str) -> dict[str, dict]:
    """``style -> row`` of the ``default`` variant's JSON lines in ab_postprocess output."""
    rows = {}
    for line in ab_text.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            if row.get("variant") == "default":
                rows[row["style"]] = row
    return rows


def check_cache(cache: Path, card) -> dict:
    """The cache's metadata (one style's JSON), after checking it matches the card."""
    meta = {}
    for style in STYLES:
        f = cache / f"{style}.json"
        if not f.is_file():
            raise CardError(f"{cache}: no {style}.json (cache the styles {', '.join(STYLES)})")
        m = json.loads(f.read_text())
        wrong = {
            "model": (m.get("model"), card.name),
            "tta": (m.get("tta"), card.tta),
            "smooth_sigma": (m.get("smooth_sigma"), card.smooth_sigma),
        }
        for key, (got, want) in wrong.items():
            if got != want:
                raise CardError(
                    f"{f}: cached with {key}={got!r}, the card's is {want!r} "
                    "(cache with the card's settings)"
                )
        if meta and (m["data"], m["frames"]) != (meta["data"], meta["frames"]):
            raise CardError(f"{cache}: styles cached on different frames")
        meta = m
    return meta


def proxies_block(rows: dict[str, dict], meta: dict, card, measured: str, command: str) -> dict:
    missing = [s for s in STYLES if s not in rows]
    if missing:
        raise CardError(f"no 'default' row for {', '.join(missing)} in the A/B output")
    clean_up = dataclasses.asdict(default_cluster_params(card))
    if any(rows[s].get("params") != clean_up for s in STYLES):
        raise CardError("the A/B rows were not made with the card's default clean-up")
    truths = {rows[s]["gt_tracks"] for s in STYLES}
    if len(truths) != 1:
        raise CardError(f"the styles' truths differ ({sorted(truths)} tracks)")
    return {
        "measured": measured,
        "data": f"{meta['data']} frames {meta['frames']}",
        "truth_tracks": truths.pop(),
        "command": command,
        "clean_up": clean_up,
        "copies": {
            s: {**{k: rows[s][k] for k in KEYS}, "tracks": rows[s]["tracks"]} for s in STYLES
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="shipped model name")
    p.add_argument("--cache", required=True, help="cache_outputs.py folder")
    p.add_argument("--ab", required=True, help="ab_postprocess.py output (--variants default)")
    p.add_argument("--measured", required=True, help="when / on what machine")
    p.add_argument("--held-out", help="evaluate_model.py JSON on the held-out frames")
    p.add_argument("--held-out-settings", help="what the held-out figures were measured on")
    p.add_argument("--held-out-command", help="the evaluate_model.py command")
    args = p.parse_args(argv)
    folder = SHIPPED_DIR / args.model
    try:
        if args.held_out and not (args.held_out_settings and args.held_out_command):
            raise CardError("--held-out needs --held-out-settings and --held-out-command")
        card = read_card(folder)
        meta = check_cache(Path(args.cache), card)
        start, last = meta["frames"].split("-")
        name = shlex.quote(card.name)
        command = (
            f"python benchmarks/cache_outputs.py --model {name} --data "
            f"../shared/data/ctc/{meta['data'].split('/')[0]} --frames {start}:{int(last) + 1} "
            f"{'--tta ' if card.tta else ''}--styles {' '.join(STYLES)} --out C; "
            f"python benchmarks/ab_postprocess.py --model {name} --cache C "
            f"--styles {' '.join(STYLES)} --variants default"
        )
        rows = read_rows(Path(args.ab).read_text())
        card.validation["proxies"] = proxies_block(rows, meta, card, args.measured, command)
        if args.held_out:
            ev = json.loads(Path(args.held_out).read_text().strip().splitlines()[-1])
            card.validation["ctc"] = {
                **{k: round(float(ev[k]), 4) for k in KEYS if ev.get(k) is not None},
                "tracks": ev["tracks"],
                "truth_tracks": ev["gt_tracks"],
                "settings": args.held_out_settings,
                "command": args.held_out_command,
            }
    except (CardError, OSError, KeyError, json.JSONDecodeError) as err:
        print(f"card_proxies.py: {err}", file=sys.stderr)
        return 2
    save_card(folder, card)
    print(json.dumps(card.validation["proxies"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
