"""How much of a GPU each worker asks Ray for under ``device: cuda``."""
from __future__ import annotations

import math

import pytest

from workers.ray_backend import gpu_share


@pytest.mark.parametrize(("gpus", "slots", "share"), [
    (1, 1, 1.0), (1, 2, 0.5), (1, 3, 0.3333), (2, 3, 0.5), (4, 2, 1.0), (2.0, 8, 0.25), (1.5, 2, 0.5), (8, 9, 0.5),
])
def test_share(gpus, slots, share):
    assert gpu_share(gpus, slots) == share


@pytest.mark.parametrize("gpus", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("slots", [1, 2, 3, 5, 8, 16, 33])
def test_every_worker_fits_on_whole_gpus(gpus, slots):
    share = gpu_share(gpus, slots)
    per_gpu = math.floor(1 / share + 1e-9)  # Ray places a fraction on one GPU
    assert per_gpu * share <= 1.0 and per_gpu * gpus >= slots
    assert share <= 1.0


@pytest.mark.parametrize(("gpus", "slots"), [(0, 2), (0.5, 2), (1, 0)])
def test_no_share_without_a_whole_gpu_or_a_slot(gpus, slots):
    with pytest.raises(ValueError, match="gpu_share: need gpus >= 1 and slots >= 1"):
        gpu_share(gpus, slots)
