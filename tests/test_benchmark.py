"""``embedtrack benchmark``: one run measures both paths and the floor, as a table and JSON."""

from __future__ import annotations

import json

from napari_embedtrack.cli import main

STAGES = ("network_s", "cluster_s", "link_s", "read_s", "write_s")


def test_benchmark_json_reports_both_paths_against_the_floor(capsys, tmp_path):
    args = ["benchmark", "--sizes", "64", "--frames", "2", "--reference-frames", "2",
            "--tta", "off", "--device", "cpu"]  # fmt: skip
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "Fluo-N2DH-GOWT1"
    assert report["floor"]["s_per_tile_job"] > 0 and report["machine"]["cores"] >= 1
    runs = {r["path"]: r for r in report["runs"]}
    assert set(runs) == {"reference", "fast"}
    for r in runs.values():
        assert r["size"] == 64 and r["tta"] is False
        assert all(r[k] >= 0 for k in STAGES)
        assert abs(r["total_s"] - sum(r[k] for k in STAGES)) < 1e-3
        assert r["peak_mb"] > 0 and r["floor_fraction"] > 0
    assert runs["fast"]["speedup"] > 0 and "speedup" not in runs["reference"]

    out = tmp_path / "bench.json"
    assert main([*args, "--paths", "fast", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| 64 | off | fast |" in table and "floor" in table
    assert json.loads(out.read_text())["runs"][0]["path"] == "fast"


def test_benchmark_refuses_one_frame_runs(capsys):
    assert main(["benchmark", "--frames", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
