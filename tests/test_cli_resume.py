"""``embedtrack predict --resume``: a run killed part-way continues to the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

from napari_embedtrack.cli import main, partial_folder
from napari_embedtrack.io import ctc
from napari_embedtrack.synthetic import make_movie

N_FRAMES = 30
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def movie_tif(tmp_path_factory):
    # cells of about the size the SIM+ model was trained on: it finds them (17 tracks for 16)
    movie = make_movie(n_frames=N_FRAMES, shape=(160, 160), n_cells=8, seed=3, radius=(12, 16))
    path = tmp_path_factory.mktemp("resume") / "movie.tif"
    tifffile.imwrite(path, (movie.image * 3000).astype(np.uint16))
    return path


def _cmd(movie, out, *extra):
    return [sys.executable, "-m", "napari_embedtrack.cli", "predict", str(movie),
            "--model", "Fluo-N2DH-SIM+", "--out", str(out), "--device", "cpu", *extra]  # fmt: skip


def _frames_done(out) -> int:
    try:
        state = json.loads((partial_folder(out) / "state.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(state["frames_done"])


def _default_sigint() -> None:
    # a test run started in the background (nohup ... &) ignores SIGINT, and a child would
    # inherit that: Python then installs no KeyboardInterrupt handler and Ctrl-C does nothing
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _kill_part_way(movie, out, sig) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        _cmd(movie, out), env=ENV, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint
    )
    deadline = time.monotonic() + 120
    while _frames_done(out) < 3:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "no frame finished within 2 minutes"
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    done = _frames_done(out)
    assert 3 <= done < N_FRAMES, f"the run was not interrupted part-way ({done} frames kept)"
    assert not out.exists()  # nothing that looks like a result
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


def test_killed_run_resumes_to_the_uninterrupted_result(movie_tif, tmp_path):
    whole = tmp_path / "whole_RES"
    subprocess.run(_cmd(movie_tif, whole), env=ENV, check=True, capture_output=True)
    assert not partial_folder(whole).exists()  # removed once the result is in place

    out = tmp_path / "killed_RES"
    killed = _kill_part_way(movie_tif, out, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    # running again without --resume would throw the finished frames away: refused
    again = subprocess.run(_cmd(movie_tif, out), env=ENV, capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    resumed = subprocess.run(_cmd(movie_tif, out, "--resume"), env=ENV, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not partial_folder(out).exists()

    want_labels, want_lineage = ctc.read_results(whole)
    got_labels, got_lineage = ctc.read_results(out)
    assert want_labels.shape[0] == N_FRAMES and len(want_lineage) > 3
    np.testing.assert_array_equal(got_labels, want_labels)
    np.testing.assert_array_equal(got_lineage, want_lineage)


def test_ctrl_c_keeps_the_finished_frames_and_says_how_to_resume(movie_tif, tmp_path):
    out = tmp_path / "interrupted_RES"
    stopped = _kill_part_way(movie_tif, out, signal.SIGINT)
    assert stopped.returncode == 130
    assert "--resume" in stopped.stderr and str(partial_folder(out)) in stopped.stderr


def test_resume_refuses_a_checkpoint_of_other_settings(movie_tif, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["predict", str(movie_tif), "--model", "Fluo-N2DH-SIM+", "--out", str(out),
                 "--device", "cpu", "--frames", "0:4"]) == 0  # fmt: skip
    # a checkpoint left by an interrupted run with TTA, continued without it
    from napari_embedtrack.engine.checkpoint import RunCheckpoint

    ckpt = RunCheckpoint(partial_folder(tmp_path / "other"), {"tta": True})
    ckpt.start()
    ckpt.save_frame(0, np.zeros((160, 160), np.uint32), {"t": 0, "next_id": 1,
                    "max_tracks": 65535, "tracks": []})  # fmt: skip
    args = ["predict", str(movie_tif), "--model", "Fluo-N2DH-SIM+", "--out",
            str(tmp_path / "other"), "--device", "cpu", "--frames", "0:4"]  # fmt: skip
    assert main([*args, "--resume"]) == 2
    assert "other" in capsys.readouterr().err  # "... holds a run with other ..."
    assert not (tmp_path / "other").exists()


def test_resume_refuses_a_run_clustered_with_other_settings(movie_tif, tmp_path):
    """A run interrupted before its model card's thresholds or the clustering defaults changed
    (here: the SIM+ seediness threshold of session 16) is not continued into a mix of frames
    clustered two ways."""
    out = tmp_path / "old_RES"
    _kill_part_way(movie_tif, out, signal.SIGINT)
    run_json = partial_folder(out) / "run.json"
    run = json.loads(run_json.read_text())
    assert run["fingerprint"]["clustering"]["seed_threshold"] == 0.4
    run["fingerprint"]["clustering"]["seed_threshold"] = 0.5
    run_json.write_text(json.dumps(run))
    resumed = subprocess.run(_cmd(movie_tif, out, "--resume"), env=ENV, capture_output=True,
                             text=True)  # fmt: skip
    assert resumed.returncode == 2
    (error,) = [line for line in resumed.stderr.splitlines() if "other clustering" in line]
    assert "start again without resuming" in error  # one line, which says what to do
    assert _frames_done(out) >= 3  # the finished frames are kept
