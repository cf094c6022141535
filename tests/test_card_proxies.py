"""benchmarks/card_proxies.py: a model's new-movie proxy figures go into its card, measured
end to end (cache_outputs.py -> ab_postprocess.py -> card_proxies.py), and `embedtrack
models` shows them; a cache made with other settings than the card's is refused."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest

from napari_embedtrack.cli import main as cli_main
from napari_embedtrack.engine.modelfile import read_card, save_card
from napari_embedtrack.engine.pipeline import default_cluster_params
from napari_embedtrack.io import ctc

STYLES = ["plain", "hard", "uneven"]


@pytest.fixture
def models(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    """A copy of the tiny model (with a cell size) in a models folder of its own."""
    root = tmp_path / "models"
    shutil.copytree(tiny_model_dir, root / "tiny")
    card = read_card(root / "tiny")
    card.cell_size = 150.0
    card.drop_single = True  # as on every shipped card (the A/B "default" assumes it)
    save_card(root / "tiny", card)
    monkeypatch.setenv("EMBEDTRACK_MODELS", str(root))
    return root


@pytest.fixture
def card_proxies(models, benchmark_script, monkeypatch):
    """The script, writing into ``models`` instead of the package's shipped models."""
    mod = benchmark_script("card_proxies")
    monkeypatch.setattr(mod, "SHIPPED_DIR", models)
    return mod


def _cache(benchmark_script, monkeypatch, data: Path, out: Path, *extra: str) -> None:
    argv = ["cache_outputs.py", "--model", "tiny", "--data", str(data), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [*argv, "--styles", *STYLES, *extra])
    benchmark_script("cache_outputs").main()


def _ab(benchmark_script, monkeypatch, capsys, cache: Path) -> str:
    argv = ["ab_postprocess.py", "--model", "tiny", "--cache", str(cache), "--styles", *STYLES]
    monkeypatch.setattr(sys, "argv", [*argv, "--variants", "default"])
    capsys.readouterr()
    benchmark_script("ab_postprocess").main()
    return capsys.readouterr().out


def test_proxy_figures_reach_the_card_and_the_model_list(
    models, card_proxies, synthetic_ctc, tmp_path, monkeypatch, capsys, benchmark_script
):
    cache = tmp_path / "cache"
    _cache(benchmark_script, monkeypatch, synthetic_ctc, cache)
    ab_text = _ab(benchmark_script, monkeypatch, capsys, cache)
    (tmp_path / "ab.txt").write_text(ab_text)
    rows = {r["style"]: r for r in map(json.loads, filter(None, ab_text.split("\n")[:3]))}
    args = ["--model", "tiny", "--cache", str(cache), "--ab", str(tmp_path / "ab.txt")]
    assert card_proxies.main([*args, "--measured", "test"]) == 0

    card = read_card(models / "tiny")
    px = card.validation["proxies"]
    truth = ctc.read_ground_truth(synthetic_ctc / "01_GT")
    assert px["truth_tracks"] == len(truth.lineage) == rows["hard"]["gt_tracks"]
    assert px["clean_up"] == dataclasses.asdict(default_cluster_params(card))
    assert set(px["copies"]) == set(STYLES)
    for style in STYLES:
        for key in ("SEG", "TRA", "CT", "BC(1)", "CCA", "tracks"):
            assert px["copies"][style][key] == rows[style][key]
    assert "--styles plain hard uneven --out C" in px["command"]

    capsys.readouterr()
    assert cli_main(["models"]) == 0
    out = capsys.readouterr().out
    r = rows["uneven"]
    assert "new-movie proxies" in out
    assert f"uneven {r['SEG']:.3f}/{r['TRA']:.3f}/{r['CT']:.3f}/{r['tracks']}" in out


def test_a_cache_with_other_settings_or_rows_of_another_clean_up_are_refused(
    models, card_proxies, synthetic_ctc, tmp_path, monkeypatch, capsys, benchmark_script
):
    before = (models / "tiny" / "card.json").read_bytes()
    cache = tmp_path / "cache"
    _cache(benchmark_script, monkeypatch, synthetic_ctc, cache, "--tta")  # the card: no TTA
    (tmp_path / "ab.txt").write_text(_ab(benchmark_script, monkeypatch, capsys, cache))
    args = ["--model", "tiny", "--cache", str(cache), "--ab", str(tmp_path / "ab.txt")]
    assert card_proxies.main([*args, "--measured", "test"]) == 2
    assert "cached with tta=True, the card's is False" in capsys.readouterr().err

    for style in STYLES:  # pretend the cache was made with the card's settings
        f = cache / f"{style}.json"
        f.write_text(json.dumps({**json.loads(f.read_text()), "tta": False}))
    text = (tmp_path / "ab.txt").read_text().replace('"min_gap": 0', '"min_gap": 1')
    (tmp_path / "ab.txt").write_text(text)
    assert card_proxies.main([*args, "--measured", "test"]) == 2
    assert "not made with the card's default clean-up" in capsys.readouterr().err
    assert (models / "tiny" / "card.json").read_bytes() == before
