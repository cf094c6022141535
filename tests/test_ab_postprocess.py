"""benchmarks/ab_postprocess.py: its "default" variant is the clean-up the models ship with,
so the A/B tables in docs/models.md compare against what users get."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_embedtrack.engine.modelfile import list_models
from napari_embedtrack.engine.pipeline import default_cluster_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ab(benchmark_script):
    return benchmark_script("ab_postprocess")


SHIPPED = {m.name: m.card for m in list_models() if m.shipped}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_default_variant_is_the_shipped_clean_up(ab, name):
    card = SHIPPED[name]
    shipped = default_cluster_params(card)
    variant = ab.params_for(ab.bare(shipped), card.cell_size, ab.VARIANTS["default"])
    assert variant == shipped
    bare = ab.bare(shipped)
    assert bare != shipped and bare.min_gap == 1 and bare.gap_distance == 0
