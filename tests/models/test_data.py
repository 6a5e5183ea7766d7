"""Tests for models.data: built-in recipes, the validation split, user files and error messages.

Expected values are recomputed here from the recipes with NumPy's legacy global seed, never by
calling the module under test.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from models.data import BUILTIN_DATASETS, Dataset, Standardization, load_dataset


@pytest.fixture
def legacy_seed() -> Iterator[None]:
    """Tests seed the global legacy RNG; put its state back afterwards."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def f32(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.asarray(a, dtype=np.float32))


def iris_rows() -> list[dict[str, str]]:
    with (resources.files("models") / "data" / "iris.csv").open("r", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- built-ins


def test_builtin_names() -> None:
    assert BUILTIN_DATASETS == ("seed-1d", "seed-2d-quadratic", "seed-rotation", "iris-petal")


def test_private_random_state_equals_legacy_global_seed(legacy_seed: None) -> None:
    np.random.seed(1)
    expected = np.concatenate([np.random.normal(0, 0.1, 100), np.random.normal(0, 0.1, 123)])
    rs = np.random.RandomState(1)
    got = np.concatenate([rs.normal(0, 0.1, 100), rs.normal(0, 0.1, 123)])
    np.testing.assert_array_equal(got, expected)


def test_seed_1d_recipe(legacy_seed: None) -> None:
    np.random.seed(1)
    noise_train, noise_test = np.random.normal(0, 0.1, 100), np.random.normal(0, 0.1, 123)
    x_tr, x_te = np.linspace(0, 4 * np.pi, 100), np.linspace(0, 4 * np.pi, 123)

    ds = load_dataset("seed-1d", validation_fraction=0.0)
    assert (ds.feature_names, ds.target_names) == (("x",), ("y",))
    assert ds.X_train.shape == ds.y_train.shape == (100, 1)
    assert ds.X_val.shape == ds.y_val.shape == (0, 1)
    assert ds.X_test.shape == ds.y_test.shape == (123, 1)
    for t in (ds.X_train, ds.y_train, ds.X_val, ds.y_val, ds.X_test, ds.y_test):
        assert t.dtype == torch.float32
    assert torch.equal(ds.X_train[:, 0], f32(x_tr))
    assert torch.equal(ds.X_test[:, 0], f32(x_te))
    assert torch.equal(ds.y_train[:, 0], f32(np.sin(x_tr) + noise_train))
    assert torch.equal(ds.y_test[:, 0], f32(np.sin(x_te) + noise_test))
    assert ds.y_train[0, 0].item() == pytest.approx(0.16243454, abs=1e-7)  # sin(0) + first noise
    assert ds.standardization is None

    # Order matters: test noises drawn first would give different data.
    np.random.seed(1)
    swapped_test_noise = np.random.normal(0, 0.1, 123)
    assert not torch.allclose(ds.y_test[:, 0], f32(np.sin(x_te) + swapped_test_noise))


def test_loading_leaves_global_rng_alone(legacy_seed: None) -> None:
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    for name in BUILTIN_DATASETS:
        load_dataset(name)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    assert np.random.get_state()[2] == 624  # position untouched after seeding


def test_seed_2d_quadratic_recipe(legacy_seed: None) -> None:
    np.random.seed(2)
    x_tr, x_te = np.random.uniform(0, 1, (100, 2)), np.random.uniform(0, 1, (100, 2))
    ds = load_dataset("seed-2d-quadratic", validation_fraction=0.0)
    assert ds.X_train.shape == (100, 2) and ds.y_train.shape == (100, 1)
    assert ds.X_test.shape == (100, 2) and ds.y_test.shape == (100, 1)
    assert ds.X_train.dtype == ds.y_test.dtype == torch.float32
    assert torch.equal(ds.X_train, f32(x_tr))
    assert torch.equal(ds.X_test, f32(x_te))
    assert torch.allclose(ds.y_train[:, 0], f32((x_tr[:, 0] ** 2 + x_tr[:, 1] ** 2) / 2), atol=1e-7)
    x = ds.X_test.double()
    assert torch.allclose(ds.y_test[:, 0].double(), (x[:, 0] ** 2 + x[:, 1] ** 2) / 2, atol=1e-6)
    assert 0 <= float(ds.X_train.min()) and float(ds.X_train.max()) <= 1


def test_seed_rotation_recipe(legacy_seed: None) -> None:
    np.random.seed(3)
    x_tr, x_te = np.random.uniform(-1, 1, (1000, 2)), np.random.uniform(-1, 1, (250, 2))
    ds = load_dataset("seed-rotation", validation_fraction=0.0)
    assert ds.X_train.shape == ds.y_train.shape == (1000, 2)
    assert ds.X_test.shape == ds.y_test.shape == (250, 2)
    assert ds.target_names == ("y1", "y2") and ds.y_train.dtype == torch.float32
    assert torch.equal(ds.X_train, f32(x_tr))
    assert torch.equal(ds.X_test, f32(x_te))
    for X, y in ((ds.X_train, ds.y_train), (ds.X_test, ds.y_test)):
        assert torch.equal(y[:, 0], -X[:, 1])
        assert torch.equal(y[:, 1], X[:, 0])


def _raw_rows(ds: Dataset, X: torch.Tensor, y: torch.Tensor) -> list[tuple[float, ...]]:
    """Undo the standardisation and round to the CSV's one decimal."""
    assert ds.standardization is not None
    s = ds.standardization
    X_raw = X.double() * s.x_std.double() + s.x_mean.double()
    y_raw = s.inverse_targets(y.double())
    return [tuple(round(v, 1) for v in row) for row in torch.cat([X_raw, y_raw], 1).tolist()]


def test_iris_petal_recipe(legacy_seed: None) -> None:
    rows = iris_rows()
    cols = ("sepal_length", "sepal_width", "petal_length", "petal_width")
    species_of = {tuple(float(r[c]) for c in cols): r["species"] for r in rows}

    # The documented stratified split, recomputed with the legacy global seed.
    np.random.seed(4)
    exp_train: list[tuple[float, ...]] = []
    exp_test: list[tuple[float, ...]] = []
    for species in ("versicolor", "virginica"):
        group = [tuple(float(r[c]) for c in cols) for r in rows if r["species"] == species]
        p = np.random.permutation(50)
        exp_train += [group[i] for i in sorted(p[:25])]
        exp_test += [group[i] for i in sorted(p[25:])]

    ds = load_dataset("iris-petal", validation_fraction=0.0)
    assert ds.feature_names == ("sepal_length", "sepal_width")
    assert ds.target_names == ("petal_length", "petal_width")
    assert ds.X_train.shape == ds.y_train.shape == ds.X_test.shape == ds.y_test.shape == (50, 2)
    assert ds.X_train.dtype == torch.float32

    train, test = _raw_rows(ds, ds.X_train, ds.y_train), _raw_rows(ds, ds.X_test, ds.y_test)
    assert Counter(species_of[r] for r in train) == {"versicolor": 25, "virginica": 25}
    assert Counter(species_of[r] for r in test) == {"versicolor": 25, "virginica": 25}
    non_setosa = [tuple(float(r[c]) for c in cols) for r in rows if r["species"] != "setosa"]
    assert Counter(train + test) == Counter(non_setosa)
    assert train == exp_train and test == exp_test

    # Standardised with population mean/std of the train half.
    raw_train = np.array(exp_train)
    s = ds.standardization
    assert s is not None
    np.testing.assert_allclose(s.x_mean.numpy(), raw_train[:, :2].mean(0), rtol=1e-6)
    np.testing.assert_allclose(s.x_std.numpy(), raw_train[:, :2].std(0, ddof=0), rtol=1e-6)
    np.testing.assert_allclose(s.y_std.numpy(), raw_train[:, 2:].std(0, ddof=0), rtol=1e-6)
    for t in (ds.X_train, ds.y_train):
        assert torch.allclose(t.mean(0), torch.zeros(2), atol=1e-5)
        assert torch.allclose(t.std(0, unbiased=False), torch.ones(2), atol=1e-5)


def test_iris_standardization_excludes_validation_rows() -> None:
    ds = load_dataset("iris-petal", validation_fraction=0.2, seed=5)
    assert ds.X_train.shape[0] == 40 and ds.X_val.shape[0] == 10
    for t in (ds.X_train, ds.y_train):
        assert torch.allclose(t.mean(0), torch.zeros(2), atol=1e-5)
        assert torch.allclose(t.std(0, unbiased=False), torch.ones(2), atol=1e-5)
    assert not torch.allclose(torch.cat([ds.X_train, ds.X_val]).mean(0), torch.zeros(2), atol=1e-3)


# ---------------------------------------------------------------- validation split


@pytest.mark.parametrize("fraction, n_val", [(0.2, 20), (0.25, 25), (0.5, 50), (0.0, 0), (0.004, 0)])
def test_validation_split_sizes(fraction: float, n_val: int) -> None:
    ds = load_dataset("seed-1d", validation_fraction=fraction, seed=0)
    assert ds.X_val.shape == ds.y_val.shape == (n_val, 1)
    assert ds.X_train.shape == ds.y_train.shape == (100 - n_val, 1)


def test_validation_split_is_seeded_and_from_train_only() -> None:
    full = load_dataset("seed-1d", validation_fraction=0.0)
    a = load_dataset("seed-1d", validation_fraction=0.2, seed=7)
    b = load_dataset("seed-1d", validation_fraction=0.2, seed=7)
    c = load_dataset("seed-1d", validation_fraction=0.2, seed=8)
    assert torch.equal(a.X_val, b.X_val) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.X_val, c.X_val)

    # The documented split: default_rng(seed).permutation, both parts in original order.
    perm = np.random.default_rng(7).permutation(100)
    assert torch.equal(a.X_val, full.X_train[np.sort(perm[:20])])
    assert torch.equal(a.y_train, full.y_train[np.sort(perm[20:])])

    # Train and val partition the original training rows; the test set is untouched.
    full_x = sorted(full.X_train[:, 0].tolist())
    assert sorted(torch.cat([a.X_train, a.X_val])[:, 0].tolist()) == full_x
    assert not set(a.X_train[:, 0].tolist()) & set(a.X_val[:, 0].tolist())
    assert torch.equal(a.X_test, full.X_test) and torch.equal(a.y_test, full.y_test)


def test_describe_is_json_summary() -> None:
    d = load_dataset("seed-rotation", validation_fraction=0.1).describe()
    assert json.loads(json.dumps(d)) == d
    assert (d["name"], d["n_train"], d["n_val"], d["n_test"]) == ("seed-rotation", 900, 100, 250)
    assert d["feature_names"] == ["x1", "x2"] and d["target_names"] == ["y1", "y2"]


def test_dataset_rejects_inconsistent_shapes() -> None:
    z = torch.zeros((3, 1))
    with pytest.raises(ValueError, match="Dataset.test"):
        Dataset("d", ("x",), ("y",), z, z, z, z, torch.zeros((3, 2)), z)


def test_standardization_helpers_round_trip() -> None:
    s = Standardization(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([3.0, -1.0]),
                        torch.tensor([0.5, 4.0]))
    y = torch.tensor([[4.0, 7.0], [2.0, -1.0]])
    assert torch.equal(s.transform_targets(y), torch.tensor([[2.0, 2.0], [-2.0, 0.0]]))
    assert torch.equal(s.inverse_targets(s.transform_targets(y)), y)
    assert torch.equal(s.transform_features(torch.tensor([[5.0]])), torch.tensor([[2.0]]))


# ---------------------------------------------------------------- user files


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


TRAIN = np.array([[float(i), float(i % 3), 2.0 * i + 1, 7.0] for i in range(10)])  # a, b, c, k
TEST = np.array([[10.5, 1.0, 22.0, 7.0], [11.0, 2.0, 23.0, 7.0]])


def test_csv_round_trip_defaults_and_test_path(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", ["a", "b", "c"], TRAIN[:, :3].tolist())
    test = write_csv(tmp_path / "test.csv", ["a", "b", "c"], TEST[:, :3].tolist())
    ds = load_dataset(train, validation_fraction=0.0, test_path=test)
    assert ds.feature_names == ("a", "b") and ds.target_names == ("c",)
    assert torch.equal(ds.X_train, f32(TRAIN[:, :2])) and torch.equal(ds.y_train, f32(TRAIN[:, 2:3]))
    assert torch.equal(ds.X_test, f32(TEST[:, :2])) and torch.equal(ds.y_test, f32(TEST[:, 2:3]))
    assert ds.X_train.dtype == torch.float32

    no_test = load_dataset(str(train), validation_fraction=0.2)
    assert no_test.X_test.shape == (0, 2) and no_test.y_test.shape == (0, 1)
    assert no_test.X_train.shape == (8, 2) and no_test.X_val.shape == (2, 2)


def test_csv_named_columns_ignore_unused_text_column(tmp_path: Path) -> None:
    rows = [[*r, "label"] for r in TRAIN.tolist()]
    path = write_csv(tmp_path / "d.csv", ["a", "b", "c", "k", "note"], rows)
    ds = load_dataset(path, validation_fraction=0.0, features=["c", "a"], targets=["b"])
    assert ds.feature_names == ("c", "a") and ds.target_names == ("b",)
    assert torch.equal(ds.X_train, f32(TRAIN[:, [2, 0]])) and torch.equal(ds.y_train, f32(TRAIN[:, 1:2]))


def test_csv_default_features_are_all_but_targets(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", ["a", "b", "c", "k"], TRAIN.tolist())
    ds = load_dataset(path, validation_fraction=0.0, targets=["b"])
    assert ds.feature_names == ("a", "c", "k") and ds.target_names == ("b",)


def test_npz_column_layout_round_trip(tmp_path: Path) -> None:
    train, test = tmp_path / "train.npz", tmp_path / "test.npz"
    np.savez(train, a=TRAIN[:, 0], b=TRAIN[:, 1], c=TRAIN[:, 2])
    np.savez(test, a=TEST[:, 0], b=TEST[:, 1], c=TEST[:, 2])
    ds = load_dataset(train, validation_fraction=0.0, test_path=test)
    assert ds.feature_names == ("a", "b") and ds.target_names == ("c",)
    assert torch.equal(ds.X_train, f32(TRAIN[:, :2])) and torch.equal(ds.y_test, f32(TEST[:, 2:3]))
    picked = load_dataset(train, validation_fraction=0.0, features=["c"], targets=["a", "b"])
    assert torch.equal(picked.y_train, f32(TRAIN[:, :2]))


def test_npz_xy_layout_with_and_without_names(tmp_path: Path) -> None:
    named = tmp_path / "named.npz"
    np.savez(named, X=TRAIN[:, :2], y=TRAIN[:, 2], feature_names=np.array(["a", "b"]),
             target_names=np.array(["c"]))
    ds = load_dataset(named, validation_fraction=0.0)
    assert ds.feature_names == ("a", "b") and ds.target_names == ("c",)
    assert torch.equal(ds.X_train, f32(TRAIN[:, :2])) and torch.equal(ds.y_train, f32(TRAIN[:, 2:3]))

    plain = tmp_path / "plain.npz"
    np.savez(plain, X=TRAIN[:, :3], y=TRAIN[:, 3:])
    ds = load_dataset(plain, validation_fraction=0.0, features=["x2", "x0"])
    assert ds.feature_names == ("x2", "x0") and ds.target_names == ("y0",)
    assert torch.equal(ds.X_train, f32(TRAIN[:, [2, 0]]))


def test_standardize_fits_on_training_part_only(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", ["a", "b", "c", "k"], TRAIN.tolist())
    test = write_csv(tmp_path / "test.csv", ["a", "b", "c", "k"], TEST.tolist())
    kw = dict(validation_fraction=0.3, seed=3, test_path=test, features=["a", "b", "k"], targets=["c"])
    raw = load_dataset(train, **kw)  # type: ignore[arg-type]
    ds = load_dataset(train, standardize=True, **kw)  # type: ignore[arg-type]
    s = ds.standardization
    assert s is not None and raw.standardization is None

    X_fit, y_fit = raw.X_train.double().numpy(), raw.y_train.double().numpy()
    np.testing.assert_allclose(s.x_mean.numpy(), X_fit.mean(0), rtol=1e-6)
    np.testing.assert_allclose(s.x_std.numpy()[:2], X_fit.std(0, ddof=0)[:2], rtol=1e-6)
    assert s.x_std[2].item() == 1.0  # constant column k
    np.testing.assert_allclose(s.y_mean.numpy(), y_fit.mean(0), rtol=1e-6)
    full_mean = np.vstack([X_fit, raw.X_val.double().numpy()]).mean(0)
    assert not np.allclose(s.x_mean.numpy()[:2], full_mean[:2])  # val rows not in the fit

    assert torch.allclose(ds.X_val, s.transform_features(raw.X_val), atol=1e-6)
    assert torch.allclose(ds.X_test, s.transform_features(raw.X_test), atol=1e-6)
    assert torch.allclose(s.inverse_targets(ds.y_test), raw.y_test, atol=1e-5)
    assert torch.all(ds.X_train[:, 2] == 0)


def test_standardize_synthetic_set() -> None:
    ds = load_dataset("seed-2d-quadratic", validation_fraction=0.25, standardize=True)
    assert ds.standardization is not None
    assert torch.allclose(ds.X_train.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(ds.y_train.std(0, unbiased=False), torch.ones(1), atol=1e-5)


# ---------------------------------------------------------------- bad input


@pytest.fixture
def good_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "data.csv", ["a", "b", "c"], TRAIN[:, :3].tolist())


def test_unknown_name_lists_builtins() -> None:
    with pytest.raises(ValueError) as err:
        load_dataset("seed-3d")
    msg = str(err.value)
    assert msg.startswith("data.dataset:") and "'seed-3d'" in msg and ".csv or .npz" in msg
    assert all(name in msg for name in BUILTIN_DATASETS)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan"), True, "0.2"])
def test_bad_validation_fraction(fraction: object) -> None:
    with pytest.raises(ValueError, match=r"^data\.validation_fraction:"):
        load_dataset("seed-1d", validation_fraction=fraction)  # type: ignore[arg-type]


def test_bad_seed() -> None:
    with pytest.raises(ValueError, match=r"^data\.seed:"):
        load_dataset("seed-1d", seed=-1)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^data\.dataset: file not found: .*nope\.csv"):
        load_dataset(tmp_path / "nope.csv")
    train = write_csv(tmp_path / "x.csv", ["a", "b"], [[1, 2]])
    with pytest.raises(ValueError, match=r"^data\.test_path: file not found: .*gone\.npz"):
        load_dataset(train, validation_fraction=0.0, test_path=tmp_path / "gone.npz")


@pytest.mark.parametrize("field, kw, column", [
    ("data.features", {"features": ["foo"]}, "'foo'"),
    ("data.targets", {"targets": ["bar"]}, "'bar'"),
])
def test_missing_column_lists_available(good_csv: Path, field: str, kw: dict[str, list[str]],
                                        column: str) -> None:
    with pytest.raises(ValueError) as err:
        load_dataset(good_csv, **kw)  # type: ignore[arg-type]
    assert str(err.value) == f"{field}: column {column} not in data.csv; available: a, b, c"


def test_missing_column_in_test_file(good_csv: Path, tmp_path: Path) -> None:
    test = write_csv(tmp_path / "test.csv", ["a", "c"], [[1, 2]])
    with pytest.raises(ValueError, match=r"^data\.features: column 'b' not in test\.csv; available: a, c"):
        load_dataset(good_csv, test_path=test)


def test_missing_column_in_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, a=TRAIN[:, 0], c=TRAIN[:, 2])
    with pytest.raises(ValueError, match=r"^data\.features: column 'b' not in d\.npz; available: a, c"):
        load_dataset(path, features=["a", "b"], targets=["c"])


def test_non_numeric_cell_names_row_and_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", ["a", "b", "c"], [[1, 2, 3], [4, "five", 6]])
    with pytest.raises(ValueError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert msg.startswith("data.dataset:") and "'five'" in msg
    assert "column 'b'" in msg and "row 2 (line 3)" in msg


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_csv_value_names_column_and_row(tmp_path: Path, bad: str) -> None:
    path = write_csv(tmp_path / "d.csv", ["a", "b", "c"], [[1, 2, 3], [4, 5, 6], [7, 8, bad]])
    with pytest.raises(ValueError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert msg.startswith("data.dataset:") and "column 'c'" in msg and "row 3" in msg and "non-finite" in msg


def test_non_finite_npz_value(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.array([[1.0], [np.inf]]), y=np.array([1.0, 2.0]))
    expected = r"^data\.dataset: column 'x0' in d\.npz has a non-finite value \(inf\) at index 1"
    with pytest.raises(ValueError, match=expected):
        load_dataset(path)


def test_too_few_rows(tmp_path: Path) -> None:
    empty = write_csv(tmp_path / "empty.csv", ["a", "b"], [])
    with pytest.raises(ValueError, match=r"^data\.dataset: empty\.csv has no data rows"):
        load_dataset(empty)
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(ValueError, match=r"^data\.dataset: blank\.csv is empty"):
        load_dataset(blank)
    one = write_csv(tmp_path / "one.csv", ["a", "b"], [[1, 2]])
    assert load_dataset(one, validation_fraction=0.4).X_train.shape == (1, 1)  # round(0.4) == 0
    with pytest.raises(ValueError, match=r"^data\.validation_fraction: .*leaves none"):
        load_dataset(one, validation_fraction=0.9)


def test_feature_target_overlap(good_csv: Path) -> None:
    with pytest.raises(ValueError, match=r"^data\.targets: 'b' also listed in data\.features"):
        load_dataset(good_csv, features=["a", "b"], targets=["b"])
    with pytest.raises(ValueError, match=r"^data\.features: .*distinct"):
        load_dataset(good_csv, features=["a", "a"])


@pytest.mark.parametrize("kw", [{"features": ["x"]}, {"targets": ["y"]}, {"test_path": "t.csv"}])
def test_file_options_rejected_for_builtins(kw: dict[str, object]) -> None:
    field = next(iter(kw))
    with pytest.raises(ValueError, match=rf"^data\.{field}: only for \.csv/\.npz files"):
        load_dataset("seed-1d", **kw)  # type: ignore[arg-type]


def test_npz_without_y_and_pickled_arrays(tmp_path: Path) -> None:
    no_y = tmp_path / "no_y.npz"
    np.savez(no_y, X=TRAIN[:, :2])
    with pytest.raises(ValueError, match=r"^data\.dataset: no_y\.npz has an 'X' array but no 'y'"):
        load_dataset(no_y)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, a=np.array([{"x": 1}, None], dtype=object), b=TRAIN[:2, 0])
    with pytest.raises(ValueError, match=r"^data\.dataset: cannot read pickled\.npz"):
        load_dataset(pickled)


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_arrays_are_the_dataset_before_its_tensors(name):
    """The driver checks the data and reads its shape from ``load_arrays`` (no torch); the
    workers train on ``load_dataset``: one recipe, the same numbers."""
    from models.data import load_arrays

    arrays, ds = load_arrays(name, 0.25, 3), load_dataset(name, 0.25, 3)
    assert (arrays.n_features, arrays.n_targets, arrays.feature_names) == (ds.n_features, ds.n_targets,
                                                                           ds.feature_names)
    tensors = (ds.X_train, ds.y_train, ds.X_val, ds.y_val, ds.X_test, ds.y_test)
    for array, tensor in zip(arrays.splits, tensors, strict=True):
        assert torch.equal(torch.tensor(array, dtype=torch.float32), tensor)
    assert (arrays.standardization is None) == (ds.standardization is None)


def test_every_column_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    """One fix of the file, not one run per problem: missing columns of both fields, and each bad
    column's first bad cell with how many there are."""
    from models.data import DataError

    path = write_csv(tmp_path / "d.csv", ["x", "y", "w"], [[1, 2, 1], [2, "abc", 1], ["q", "", 1], [4, 5, 1]])
    with pytest.raises(DataError) as err:
        load_dataset(path, features=["x", "z", "v"], targets=["y", "u"])
    assert err.value.problems == [
        "data.features: columns 'z', 'v' not in d.csv; available: x, y, w",
        "data.targets: column 'u' not in d.csv; available: x, y, w",
        "data.dataset: non-numeric value 'q' in d.csv, column 'x', row 3 (line 4)",
        "data.dataset: non-numeric value 'abc' in d.csv, column 'y', row 2 (line 3) (2 such rows in all)",
    ]
    assert str(err.value) == "\n".join(err.value.problems)


def test_the_run_command_names_every_problem_of_the_data_file(tmp_path: Path, monkeypatch, capsys) -> None:
    from sweeps.cli import main

    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "d.csv", ["x", "y"], [[1, 2], [2, "nan"], [3, "inf"]])
    (tmp_path / "s.yaml").write_text("name: f\ndata: {dataset: d.csv, features: [x, z]}\nparameters: {width: {value: 4}}\n")
    assert main(["run", "s.yaml"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "mlpsweep run: error: data.features: column 'z' not in d.csv; available: x, y",
        "mlpsweep run: error: data.dataset: column 'y' in d.csv has a non-finite value (nan) at row 2 (line 3) "
        "(2 such rows in all); remove or fill it"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "s.yaml"]
