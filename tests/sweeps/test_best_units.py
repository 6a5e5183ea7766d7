"""What `mlpsweep best` says of the units its model works in (config.json's data and units)."""
from __future__ import annotations

from sweeps.cmd_best import data_of


def test_raw_data_is_said_to_be_raw():
    out = data_of({"dataset": "seed-1d", "validation_fraction": 0.2, "seed": 0, "standardize": False})
    assert out["units"].startswith("the data's own") and out["data"]["dataset"] == "seed-1d"


def test_standardised_data_gives_the_vectors_or_says_they_are_missing():
    vectors = {"x_mean": [1.0], "x_std": [2.0], "y_mean": [3.0], "y_std": [4.0]}
    asked = data_of({"dataset": "d.csv", "standardize": True, "standardization": vectors})
    assert asked["units"].startswith("standardized: ") and "does not record" not in asked["units"]
    assert asked["data"]["standardization"] == vectors
    # iris-petal is standardised by its recipe; a checkpoint from before the vectors were recorded
    old = data_of({"dataset": "iris-petal", "validation_fraction": 0.2, "seed": 0})
    assert old["units"].startswith("standardized: ") and "does not record the vectors" in old["units"]


def test_a_checkpoint_without_data_adds_nothing():
    assert data_of(None) == {} and data_of({}) == {}
