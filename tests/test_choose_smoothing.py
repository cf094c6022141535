"""benchmarks/choose_smoothing.py: the rule that sets a card's ``smooth_sigma``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "choose_smoothing.py"


@pytest.fixture(scope="module")
def rule(benchmark_script):
    return benchmark_script("choose_smoothing")


def _rows(plain, hard, uneven):
    """style -> row from (SEG, TRA, CT) per copy."""
    return {
        style: {"style": style, "variant": "default", "SEG": s, "TRA": t, "CT": c, "tracks": 9}
        for style, (s, t, c) in (("plain", plain), ("hard", hard), ("uneven", uneven))
    }


def test_the_best_dim_copies_win_unless_the_movie_pays(rule):
    runs = {
        0.0: _rows((0.80, 0.95, 0.5), (0.40, 0.70, 0.2), (0.40, 0.70, 0.2)),
        0.5: _rows((0.795, 0.945, 0.4), (0.50, 0.80, 0.3), (0.50, 0.80, 0.3)),  # costs 0.005
        1.0: _rows((0.78, 0.95, 0.5), (0.60, 0.90, 0.4), (0.60, 0.90, 0.4)),  # SEG -0.02
    }
    assert rule.choose(runs, tolerance=0.01) == 0.5
    assert rule.choose(runs, tolerance=0.03) == 1.0
    runs[0.5] = runs[0.0]  # a tie goes to the smaller SD
    assert rule.choose(runs, tolerance=0.01) == 0.0
    with pytest.raises(ValueError, match="0=FILE"):
        rule.choose({0.5: runs[0.5]}, tolerance=0.01)


def test_command_line_reads_ab_postprocess_output(tmp_path):
    files = []
    for sigma, seg in ((0, 0.4), (0.5, 0.6)):
        rows = _rows((0.8, 0.9, 0.5), (seg, 0.8, 0.3), (seg, 0.8, 0.3))
        rows["noise"] = {"style": "hard", "variant": "other", "SEG": 1.0}  # another variant
        path = tmp_path / f"ab_{sigma}.txt"
        path.write_text("| table |\n" + "\n".join(json.dumps(r) for r in rows.values()) + "\n")
        files.append(f"{sigma}={path}")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *files], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "smooth_sigma 0.5"
    assert "| 0.5 (chosen) |" in out
