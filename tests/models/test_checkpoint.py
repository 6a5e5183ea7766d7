"""Checkpoints round-trip bit-identically and refuse anything that is not a plain state dict."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from models import MLP, CheckpointError, load_checkpoint, save_checkpoint
from models.checkpoint import MODEL_FILE, file_sha256


def test_round_trip_gives_bit_identical_predictions(tmp_path):
    model = MLP([2, 5, 7, 1], "gelu", generator=torch.Generator().manual_seed(3))
    save_checkpoint(tmp_path, model.state_dict(), model.sizes, "gelu", extra={"trial": 4})
    again = load_checkpoint(tmp_path)
    X = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(X), again(X))
    meta = json.loads((tmp_path / "architecture.json").read_text())
    assert meta["architecture"] == "2-5-7-1:gelu" and meta["extra"] == {"trial": 4}
    assert meta["sha256"] == file_sha256(tmp_path / MODEL_FILE)


def test_state_dict_loads_into_the_course_class(tmp_path):
    """The course's MLP registers parameters named "{l}_weight"/"{l}_bias": same keys, same shapes."""
    model = MLP([1, 3, 1])
    save_checkpoint(tmp_path, model.state_dict(), [1, 3, 1], "sigmoid")
    state = torch.load(tmp_path / MODEL_FILE, weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "0_weight": (1, 3), "0_bias": (3,), "1_weight": (3, 1), "1_bias": (1,)}


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    model = MLP([1, 3, 1])
    save_checkpoint(tmp_path, model.state_dict(), [1, 3, 1], "sigmoid")
    marker = tmp_path / "pwned"
    with open(tmp_path / MODEL_FILE, "wb") as fh:
        pickle.dump({"0_weight": _Evil(str(marker))}, fh)
    # Even with a matching digest (an attacker can rewrite both files), weights_only refuses it.
    meta = json.loads((tmp_path / "architecture.json").read_text())
    meta["sha256"] = file_sha256(tmp_path / MODEL_FILE)
    (tmp_path / "architecture.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a plain tensor state dict"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_tampered_file_fails_digest_check(tmp_path):
    model = MLP([1, 3, 1])
    save_checkpoint(tmp_path, model.state_dict(), [1, 3, 1], "sigmoid")
    recorded = file_sha256(tmp_path / MODEL_FILE)
    other = MLP([1, 3, 1], generator=torch.Generator().manual_seed(99))
    torch.save(other.state_dict(), tmp_path / MODEL_FILE)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="tracking store"):
        # architecture.json fixed up, but the digest recorded elsewhere still catches it
        meta = json.loads((tmp_path / "architecture.json").read_text())
        meta["sha256"] = file_sha256(tmp_path / MODEL_FILE)
        (tmp_path / "architecture.json").write_text(json.dumps(meta))
        load_checkpoint(tmp_path, expected_sha256=recorded)


def test_wrong_shapes_and_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="needs both"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="has shape"):
        save_checkpoint(tmp_path, MLP([1, 3, 1]).state_dict(), [1, 4, 1], "sigmoid")


def test_checkpoint_bytes_written_elsewhere_load_as_the_same_model(tmp_path):
    """A worker sends ``state_bytes``; the tracking process writes them with ``write_checkpoint``."""
    from models.checkpoint import state_bytes, weights_bytes, write_checkpoint

    model = MLP([1, 6, 6, 1], "tanh", generator=torch.Generator().manual_seed(1))
    save_checkpoint(tmp_path / "direct", model.state_dict(), model.sizes, "tanh", extra={"trial": 2})
    digest = write_checkpoint(tmp_path / "bytes", state_bytes(model.state_dict(), model.sizes), model.sizes, "tanh",
                              extra={"trial": 2}, weights=weights_bytes(model.state_dict(), model.sizes))
    assert digest == file_sha256(tmp_path / "bytes" / MODEL_FILE)
    again = load_checkpoint(tmp_path / "bytes", expected_sha256=digest)
    X = torch.randn(20, 1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(X), again(X))
    direct, written = (json.loads((tmp_path / d / "architecture.json").read_text()) for d in ("direct", "bytes"))
    assert direct == written  # the same model.pt bytes, the same architecture file
    with pytest.raises(CheckpointError, match="has shape"):
        state_bytes(model.state_dict(), [1, 5, 6, 1])


def test_weights_file_holds_the_same_values_and_is_checked_like_the_model(tmp_path):
    """``weights.npz`` reads back without torch as the state dict's values; a changed file, a
    pickle inside it or a checkpoint without it (older ones) is refused, never loaded."""
    import hashlib

    import numpy as np

    from models.checkpoint import WEIGHTS_FILE, load_weights

    model = MLP([2, 5, 3, 1], "relu", generator=torch.Generator().manual_seed(4))
    folder = save_checkpoint(tmp_path / "ck", model.state_dict(), model.sizes, "relu")
    meta = json.loads((folder / "architecture.json").read_text())
    weights, read_meta = load_weights(folder, expected_sha256=meta["weights_sha256"])
    assert read_meta["sizes"] == [2, 5, 3, 1] and read_meta["activation"] == "relu"
    assert set(weights) == set(model.state_dict())
    for name, value in model.state_dict().items():
        assert np.array_equal(weights[name], value.numpy()) and weights[name].dtype == np.float32

    with pytest.raises(CheckpointError, match="tracking store records"):
        load_weights(folder, expected_sha256="0" * 64)
    crafted = {name: np.asarray(value, dtype=object) for name, value in weights.items()}  # pickled inside
    np.savez(folder / WEIGHTS_FILE, **crafted)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_weights(folder)
    meta["weights_sha256"] = hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()
    (folder / "architecture.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not an archive of plain arrays"):
        load_weights(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="needs both"):
        load_weights(folder)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "softplus",
                                        "identity"])
def test_numpy_forward_matches_the_torch_mlp(tmp_path, activation):
    """The report draws the best fit from ``weights.npz`` with models.forward: the same outputs
    as the MLP itself, for every activation, far into both tails."""
    import numpy as np

    from models.activations import ACTIVATIONS
    from models.checkpoint import load_weights
    from models.forward import ACTIVATIONS as NP_ACTIVATIONS, forward, hidden_layers

    assert set(NP_ACTIVATIONS) == set(ACTIVATIONS)
    z = np.linspace(-40, 40, 2001)
    assert np.allclose(NP_ACTIVATIONS[activation](z), ACTIVATIONS[activation].fn(torch.tensor(z)).numpy(),
                       rtol=1e-12, atol=1e-300)
    model = MLP([2, 7, 5, 3], activation, generator=torch.Generator().manual_seed(7)).double()
    weights, meta = load_weights(save_checkpoint(tmp_path, model.state_dict(), model.sizes, activation))
    X = np.random.default_rng(0).normal(0, 3, (64, 2))
    with torch.no_grad():
        expected = model(torch.tensor(X)).numpy()
    assert np.allclose(forward(weights, meta["sizes"], activation, X), expected, rtol=1e-10, atol=1e-12)
    assert hidden_layers(weights, meta["sizes"], activation, X).shape == (64, 5)
