"""benchmarks/pseudo_labels.py: a model's masks matched one to one to the truth's markers
fill in the frames the truth has no masks for; the truth's own masks come first."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import find_boundaries

from napari_embedtrack.engine import data as D
from napari_embedtrack.io import ctc


@pytest.fixture(scope="module")
def pseudo(benchmark_script):
    return benchmark_script("pseudo_labels")


def _markers(labels: np.ndarray) -> np.ndarray:
    """Markers inside the cells (as in the CTC's data), not their masks."""
    return np.where(ndimage.binary_dilation(find_boundaries(labels), iterations=2), 0, labels)


def test_matched_masks_one_to_one(pseudo, small_movie):
    truth = small_movie.labels[2].astype(np.int32)
    markers = _markers(truth)
    ids = [int(i) for i in np.unique(truth) if i]
    assert len(ids) >= 3
    ours = np.where(truth > 0, truth + 10, 0)  # a model's masks, its own numbering
    assert np.array_equal(pseudo.matched_masks(ours, markers), truth)  # oracle: all match

    merged = ours.copy()  # two cells in one mask: neither is matched
    merged[ours == ids[1] + 10] = ids[0] + 10
    got = pseudo.matched_masks(merged, markers)
    assert set(np.unique(got)) == {0, *ids[2:]}
    split = ours.copy()  # one cell in two masks, each on part of the marker: dropped
    ys, xs = np.nonzero(truth == ids[0])
    split[ys[ys > np.median(ys)], xs[ys > np.median(ys)]] = 99
    got = pseudo.matched_masks(split, markers)
    assert ids[0] not in np.unique(got) and ids[1] in np.unique(got)
    found_nothing = np.zeros_like(ours)  # a missed cell: nothing there
    assert not pseudo.matched_masks(found_nothing, markers).any()


def test_dataset_with_pseudo_labels(pseudo, synthetic_ctc, small_movie, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(synthetic_ctc, data)
    truth = ctc.read_ground_truth(data / "01_GT")
    n = truth.n_frames
    markers = np.stack([_markers(f) for f in truth.tra])
    ctc.write_ground_truth(
        data / "01_GT", markers, truth.lineage, {1: truth.tra[1], n - 1: truth.tra[n - 1]},
        overwrite=True,
    )  # fmt: skip
    results = tmp_path / "RES"  # "the model" found every cell but one in frame 0
    found = truth.tra.copy()
    gone = int(np.unique(found[0])[1])
    found[0][found[0] == gone] = 0
    ctc.write_results(results, found, truth.lineage)
    out = tmp_path / "pseudo"
    argv = ["x", "--data", str(data), "--results", str(results), "--out", str(out)]
    monkeypatch.setattr("sys.argv", [*argv, "--keep-truth", f"{n - 2}:{n}"])
    pseudo.main()
    made = ctc.read_ground_truth(out / "01_GT")
    assert np.array_equal(made.tra, markers)  # the truth's markers and lineage unchanged
    assert np.array_equal(made.lineage, truth.lineage)
    assert sorted(made.seg) == [*range(n - 2), n - 1]  # n-2: kept to the truth: none
    assert np.array_equal(made.seg[n - 1] > 0, truth.tra[n - 1] > 0)
    assert np.array_equal(made.seg[2] > 0, truth.tra[2] > 0)  # every cell from "the model"
    assert not (made.seg[0][found[0] == 0] > 0).any()  # the missed cell: no mask
    seq = D.load_ctc_sequence(out)  # training sees it: the missed cell is unknown, not bg
    assert seq.ignore[0][truth.tra[0] == gone].all()
    assert not seq.ignore[2].any()

    monkeypatch.setattr("sys.argv", [*argv[:-1], str(data)])  # never over a dataset
    with pytest.raises(SystemExit, match="is not empty"):
        pseudo.main()
    assert np.array_equal(ctc.read_ground_truth(data / "01_GT").tra, markers)
