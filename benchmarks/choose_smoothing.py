"""Pick a model card's ``smooth_sigma`` from ``ab_postprocess.py`` results, one file per SD.

Each FILE (or comma-separated files) holds the JSON lines ``benchmarks/ab_postprocess.py
--variants default`` printed for the caches ``cache_outputs.py --smooth SIGMA`` wrote (styles
plain, hard and uneven). The rule
(docs/models.md, session 12): the SD with the highest mean of SEG, TRA and CT over the two
dim copies (``hard``, ``uneven``), among those that cost the movie itself (``plain``) at most
``--tolerance`` SEG and TRA against no smoothing. Prints a markdown table (SEG / TRA / CT /
tracks per copy) and the choice.

    python benchmarks/choose_smoothing.py 0=ab_s0.txt 0.5=ab_s0.5.txt 1=ab_s1.txt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DIM = ("hard", "uneven")
SCORES = ("SEG", "TRA", "CT")


def read_rows(path: Path) -> dict[str, dict]:
    """style -> the ``default`` variant's row of one ab_postprocess output."""
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            if row.get("variant") == "default":
                rows[row["style"]] = row
    return rows


def dim_score(rows: dict[str, dict]) -> float:
    return sum(rows[s][k] for s in DIM for k in SCORES) / (len(DIM) * len(SCORES))


def choose(runs: dict[float, dict[str, dict]], tolerance: float) -> float:
    """The SD the rule picks (``runs``: SD -> style -> row; SD 0 must be there)."""
    if 0.0 not in runs:
        raise ValueError("the rule compares against no smoothing: give 0=FILE")
    for sigma, rows in runs.items():
        missing = {"plain", *DIM} - set(rows)
        if missing:
            raise ValueError(f"SD {sigma:g}: no 'default' row for {sorted(missing)}")
    base = runs[0.0]["plain"]
    ok = [
        s
        for s, rows in runs.items()
        if all(rows["plain"][k] >= base[k] - tolerance for k in ("SEG", "TRA"))
    ]
    return max(ok, key=lambda s: (round(dim_score(runs[s]), 6), -s))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="SIGMA=FILE[,FILE]")
    p.add_argument("--tolerance", type=float, default=0.01)
    args = p.parse_args()
    runs = {}
    for item in args.runs:
        sigma, sep, path = item.partition("=")
        if not sep:
            p.error(f"expected SIGMA=FILE, got {item!r}")
        runs[float(sigma)] = {k: v for f in path.split(",") for k, v in read_rows(Path(f)).items()}
    pick = choose(runs, args.tolerance)
    print("| SD | plain | hard | uneven | mean of SEG, TRA, CT on hard + uneven |")
    print("|---|---|---|---|---|")
    for sigma in sorted(runs):
        rows = runs[sigma]
        cells = [
            " / ".join(f"{rows[s][k]:.3f}" for k in SCORES) + f" / {rows[s]['tracks']}"
            for s in ("plain", *DIM)
        ]
        mark = " (chosen)" if sigma == pick else ""
        print(f"| {sigma:g}{mark} | " + " | ".join(cells) + f" | {dim_score(rows):.3f} |")
    print(f"smooth_sigma {pick:g}")


if __name__ == "__main__":
    main()
