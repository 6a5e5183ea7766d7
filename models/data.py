"""Datasets for the sweeps: the four built-ins of the course notebooks and the user's own files.

Every dataset comes back as a :class:`Dataset` of float32 tensors split into train, validation
and test (:func:`load_dataset`); :func:`load_arrays` stops before the tensors, without importing
torch (the sweep driver only checks the data and reads its shape). The validation rows are
always drawn from the training set with a seeded split; the test set is fixed by the recipe (or
by ``test_path``) and never touched by the split.
Everything is deterministic for a given ``(name, validation_fraction, seed)``.

Built-in recipes (the seeds of the two synthetic 2-D sets are ours; DOMAIN.md leaves them open):

* ``seed-1d``: x = linspace(0, 4pi, 100) for train and linspace(0, 4pi, 123) for test,
  y = sin(x) + N(0, 0.1) noise from ``RandomState(1)``: 100 train noises, then 123 test noises.
* ``seed-2d-quadratic``: x uniform on [0, 1]^2, y = (x1^2 + x2^2) / 2, no noise;
  ``RandomState(2)`` draws 100 train then 100 test points with ``uniform(0, 1, (n, 2))``.
* ``seed-rotation``: x uniform on [-1, 1]^2, y = (-x2, x1);
  ``RandomState(3)`` draws 1000 train then 250 test points with ``uniform(-1, 1, (n, 2))``.
* ``iris-petal``: the 100 versicolor and virginica rows of the shipped iris CSV;
  (sepal_length, sepal_width) -> (petal_length, petal_width). ``RandomState(4)`` draws
  ``permutation(50)`` for versicolor, then for virginica: the first 25 go to train, the other
  25 to test, each half kept in file order. Always standardised (see ``load_dataset``).
"""
from __future__ import annotations

import csv
import io
import logging
import numbers
import os
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["Standardization", "Dataset", "Arrays", "BUILTIN_DATASETS", "DataError", "load_arrays", "load_dataset"]

logger = logging.getLogger(__name__)

_FILE_SUFFIXES = (".csv", ".npz")


@dataclass(frozen=True, eq=False)
class Standardization:
    """Per-column mean and std (population, ddof=0) fitted on the training part only.

    A constant column gets std 1, so it maps to zeros instead of dividing by zero.
    """

    x_mean: Tensor  # (d_in,)
    x_std: Tensor  # (d_in,)
    y_mean: Tensor  # (d_out,)
    y_std: Tensor  # (d_out,)

    def transform_features(self, x: Tensor) -> Tensor:
        """Standardise raw inputs (N, d_in) the way the training inputs were."""
        return (x - self.x_mean.to(x)) / self.x_std.to(x)

    def transform_targets(self, y: Tensor) -> Tensor:
        """Standardise raw targets (N, d_out) the way the training targets were."""
        return (y - self.y_mean.to(y)) / self.y_std.to(y)

    def inverse_targets(self, y: Tensor) -> Tensor:
        """Map standardised targets or predictions (N, d_out) back to the original units."""
        return y * self.y_std.to(y) + self.y_mean.to(y)

    def as_json(self) -> dict[str, list[float]]:
        """The four vectors as lists: what a checkpoint records so its model can be used on raw data."""
        return {k: [float(v) for v in getattr(self, k).tolist()] for k in ("x_mean", "x_std", "y_mean", "y_std")}


@dataclass(frozen=True, eq=False)
class _Columns:
    """What :class:`Dataset` and :class:`Arrays` share: the name and the column names."""

    name: str
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_targets(self) -> int:
        return len(self.target_names)


@dataclass(frozen=True, eq=False)
class Dataset(_Columns):
    """A regression dataset split into train, validation and test (float32, 2-D tensors).

    ``X_val``/``y_val`` have 0 rows when ``validation_fraction == 0``; ``X_test``/``y_test``
    have 0 rows when there is no test set. When ``standardization`` is set, all splits are
    in standardised units.
    """

    X_train: Tensor  # (N_train, d_in)
    y_train: Tensor  # (N_train, d_out)
    X_val: Tensor  # (N_val, d_in)
    y_val: Tensor  # (N_val, d_out)
    X_test: Tensor  # (N_test, d_in)
    y_test: Tensor  # (N_test, d_out)
    standardization: Standardization | None = None

    def __post_init__(self) -> None:
        import torch

        d_in, d_out = len(self.feature_names), len(self.target_names)
        for split in ("train", "val", "test"):
            X, y = getattr(self, f"X_{split}"), getattr(self, f"y_{split}")
            if X.dim() != 2 or X.shape[1] != d_in or y.dim() != 2 or y.shape[1] != d_out:
                raise ValueError(f"Dataset.{split}: expected X (N, {d_in}) and y (N, {d_out}), "
                                 f"got {tuple(X.shape)} and {tuple(y.shape)}")
            if X.shape[0] != y.shape[0] or X.dtype != torch.float32 or y.dtype != torch.float32:
                raise ValueError(f"Dataset.{split}: X and y must be float32 with equal rows, got "
                                 f"{tuple(X.shape)} {X.dtype} and {tuple(y.shape)} {y.dtype}")

    def describe(self) -> dict[str, object]:
        """A small JSON-able summary: name, split sizes, feature and target names."""
        return {"name": self.name, "n_train": int(self.X_train.shape[0]),
                "n_val": int(self.X_val.shape[0]), "n_test": int(self.X_test.shape[0]),
                "feature_names": list(self.feature_names), "target_names": list(self.target_names),
                "standardized": self.standardization is not None}


@dataclass(frozen=True)
class _Raw:
    """Train and test arrays (float64, 2-D) before the validation split."""

    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    standardize: bool = False  # part of the recipe, whatever the caller asks


def _f32(a: np.ndarray) -> np.ndarray:
    """The recipes store float32; keep the rounded values (as float64) from here on."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def _seed_1d() -> _Raw:
    rs = np.random.RandomState(1)  # same stream as np.random.seed(1), global state untouched
    x_tr, x_te = np.linspace(0, 4 * np.pi, 100), np.linspace(0, 4 * np.pi, 123)
    y_tr = np.sin(x_tr) + rs.normal(0, 0.1, 100)  # train noises first ...
    y_te = np.sin(x_te) + rs.normal(0, 0.1, 123)  # ... then the test noises
    col = lambda a: _f32(a)[:, None]  # noqa: E731
    return _Raw(("x",), ("y",), col(x_tr), col(y_tr), col(x_te), col(y_te))


def _seed_2d_quadratic() -> _Raw:
    rs = np.random.RandomState(2)
    x_tr, x_te = rs.uniform(0, 1, (100, 2)), rs.uniform(0, 1, (100, 2))
    f = lambda x: ((x[:, 0] ** 2 + x[:, 1] ** 2) / 2)[:, None]  # noqa: E731
    return _Raw(("x1", "x2"), ("y",), _f32(x_tr), _f32(f(x_tr)), _f32(x_te), _f32(f(x_te)))


def _seed_rotation() -> _Raw:
    rs = np.random.RandomState(3)
    x_tr, x_te = _f32(rs.uniform(-1, 1, (1000, 2))), _f32(rs.uniform(-1, 1, (250, 2)))
    rot = lambda x: np.stack([-x[:, 1], x[:, 0]], axis=1)  # noqa: E731  exact in float32
    return _Raw(("x1", "x2"), ("y1", "y2"), x_tr, rot(x_tr), x_te, rot(x_te))


def _iris_petal() -> _Raw:
    source = resources.files("models") / "data" / "iris.csv"
    with source.open("rb") as fh:  # bytes, so the csv module sees the file's own newlines
        rows = list(csv.DictReader(io.StringIO(fh.read().decode("utf-8"), newline="")))
    rs = np.random.RandomState(4)
    train: list[dict[str, str]] = []
    test: list[dict[str, str]] = []
    for species in ("versicolor", "virginica"):
        group = [r for r in rows if r["species"] == species]  # 50 rows, file order
        p = rs.permutation(len(group))
        half = len(group) // 2
        train += [group[i] for i in sorted(p[:half])]
        test += [group[i] for i in sorted(p[half:])]
    feats, targs = ("sepal_length", "sepal_width"), ("petal_length", "petal_width")
    table = lambda part, cols: np.array([[float(r[c]) for c in cols] for r in part])  # noqa: E731
    return _Raw(feats, targs, table(train, feats), table(train, targs),
                table(test, feats), table(test, targs), standardize=True)


_BUILTINS: dict[str, Callable[[], _Raw]] = {
    "seed-1d": _seed_1d,
    "seed-2d-quadratic": _seed_2d_quadratic,
    "seed-rotation": _seed_rotation,
    "iris-petal": _iris_petal,
}
BUILTIN_DATASETS: tuple[str, ...] = tuple(_BUILTINS)


def standardized(dataset: str, standardize: bool = False) -> bool:
    """Whether :func:`load_dataset` gives ``dataset`` in standard units: asked for, or part of a
    built-in's recipe (``iris-petal``). Its MSEs are then in standard units too."""
    return standardize or (dataset in _BUILTINS and _BUILTINS[dataset]().standardize)


@dataclass(frozen=True)
class _Table:
    """Columns of one user file, not yet converted: str cells (CSV) or arrays (NPZ)."""

    source: str  # file name for messages
    field: str  # "data.dataset" or "data.test_path"
    columns: dict[str, np.ndarray]
    lines: tuple[int, ...] | None = None  # CSV line number of each row


def _read_csv(path: Path, field: str) -> _Table:
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{field}: {path.name} is empty; expected a header row of column names")
        names = [h.strip() for h in header]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes or "" in names:
            raise ValueError(f"{field}: {path.name} header needs unique, non-empty column names; "
                             f"got {', '.join(names)}")
        cells: list[list[str]] = []
        lines: list[int] = []
        for row in reader:
            if not any(c.strip() for c in row):
                continue  # blank line
            if len(row) != len(names):
                raise ValueError(f"{field}: line {reader.line_num} of {path.name} has {len(row)} "
                                 f"cells, the header has {len(names)}")
            cells.append(row)
            lines.append(reader.line_num)
    grid = np.array(cells, dtype=str).reshape(len(cells), len(names))
    return _Table(path.name, field, {n: grid[:, j] for j, n in enumerate(names)}, tuple(lines))


def _read_npz(path: Path, field: str) -> _Table:
    """Two layouts: one 1-D array per column (keys are the names), or ``X`` (N, d_in) and
    ``y`` (N, d_out) with optional ``feature_names``/``target_names`` (default x0.., y0..)."""
    if not zipfile.is_zipfile(path):  # else NumPy reads it as a pickle, and says so
        raise ValueError(f"{field}: {path.name} is not an .npz file (a zip of .npy arrays, as numpy.savez "
                         f"writes)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        reason = ("it holds pickled objects, which are refused (store plain numeric arrays)"
                  if "pickle" in str(exc) else str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ValueError(f"{field}: cannot read {path.name} as .npz: {reason}") from None
    if "X" not in arrays:
        return _Table(path.name, field, arrays)
    if "y" not in arrays:
        raise ValueError(f"{field}: {path.name} has an 'X' array but no 'y'; "
                         f"store both, or one 1-D array per named column")
    columns: dict[str, np.ndarray] = {}
    for key, default in (("X", "x"), ("y", "y")):
        a = arrays[key].reshape(len(arrays[key]), -1) if arrays[key].ndim == 1 else arrays[key]
        if a.ndim != 2:
            raise ValueError(f"{field}: '{key}' in {path.name} must be 1-D or 2-D, got {a.shape}")
        names_key = "feature_names" if key == "X" else "target_names"
        names = [str(n) for n in arrays.get(names_key, [f"{default}{j}" for j in range(a.shape[1])])]
        if len(names) != a.shape[1] or len(set(names) | set(columns)) != len(names) + len(columns):
            raise ValueError(f"{field}: '{names_key}' in {path.name} must give {a.shape[1]} unique "
                             f"names, got {names}")
        columns.update({n: a[:, j] for j, n in enumerate(names)})
    return _Table(path.name, field, columns)


def _read_table(path_like: str | os.PathLike[str], field: str) -> _Table:
    path = Path(path_like)
    if path.suffix.lower() not in _FILE_SUFFIXES:
        raise ValueError(f"{field}: {str(path)!r} must end in .csv or .npz")
    if path.is_dir():
        raise ValueError(f"{field}: {path} is a folder, not a data file")
    if not path.is_file():
        where = "" if path.is_absolute() else f" (a relative path is read from the current folder, {Path.cwd()})"
        raise ValueError(f"{field}: file not found: {path}{where}")
    table = _read_csv(path, field) if path.suffix.lower() == ".csv" else _read_npz(path, field)
    n_rows = {len(c) for c in table.columns.values() if c.ndim == 1}
    if not table.columns or n_rows == {0}:
        raise ValueError(f"{field}: {path.name} has no data rows")
    return table


class DataError(ValueError):
    """Every problem found in a data file, one line each (``problems``), naming the spec field."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def _columns(table: _Table, wanted: Sequence[tuple[str, Sequence[str]]]) -> dict[str, np.ndarray]:
    """The named columns (``(field, names)`` pairs) as float64, every cell numeric and finite.

    Raises:
        DataError: every missing column (one line per field) and every bad column (its first bad
            cell and how many there are), so one fix of the file answers them all.
    """
    problems: list[str] = []
    for field, names in wanted:
        missing = [n for n in names if n not in table.columns]
        if missing:
            what = f"column {missing[0]!r}" if len(missing) == 1 else f"columns {', '.join(map(repr, missing))}"
            problems.append(f"{field}: {what} not in {table.source}; available: {', '.join(table.columns)}")
    out: dict[str, np.ndarray] = {}
    for name in dict.fromkeys(n for _, names in wanted for n in names if n in table.columns):
        try:
            out[name] = _column(table, name)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise DataError(problems)
    return out


def _column(table: _Table, name: str) -> np.ndarray:
    """One column of ``table`` as float64, with every cell numeric and finite."""
    raw = table.columns[name]
    if raw.ndim != 1:
        raise ValueError(f"{table.field}: array {name!r} in {table.source} must be 1-D, got {raw.shape}")
    lines = table.lines
    where = (lambda i: f"row {i + 1} (line {lines[i]})") if lines else (lambda i: f"index {i}")
    more = lambda n: f" ({n} such rows in all)" if n > 1 else ""  # noqa: E731
    if raw.dtype.kind in "US":
        values = np.empty(len(raw))
        wrong: list[int] = []
        for i, cell in enumerate(raw):
            try:
                values[i] = float(cell)
            except ValueError:
                wrong.append(i)
        if wrong:
            raise ValueError(f"{table.field}: non-numeric value {str(raw[wrong[0]])!r} in {table.source}, "
                             f"column {name!r}, {where(wrong[0])}{more(len(wrong))}")
    elif raw.dtype.kind in "biuf":
        values = raw.astype(np.float64)
    else:
        raise ValueError(f"{table.field}: column {name!r} in {table.source} is not numeric "
                         f"(dtype {raw.dtype})")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(f"{table.field}: column {name!r} in {table.source} has a non-finite value "
                         f"({values[bad[0]]}) at {where(int(bad[0]))}{more(bad.size)}; remove or fill it")
    return values


def _names(value: Sequence[str] | None, field: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{field}: must be a non-empty list of distinct column names, got {list(names)}")
    return names


def _from_files(path: str | os.PathLike[str], test_path: str | os.PathLike[str] | None,
                features: Sequence[str] | None, targets: Sequence[str] | None) -> _Raw:
    train = _read_table(path, "data.dataset")
    feats, targs = _names(features, "data.features"), _names(targets, "data.targets")
    available = list(train.columns)
    if targs is None:
        targs = (available[-1],)
    if feats is None:
        feats = tuple(c for c in available if c not in targs)
        if not feats:
            raise ValueError(f"data.features: {train.source} has no column left for features; "
                             f"available: {', '.join(available)}")
    overlap = [c for c in feats if c in targs]
    if overlap:
        raise ValueError(f"data.targets: {', '.join(map(repr, overlap))} also listed in "
                         f"data.features; a column is either a feature or a target")

    def arrays(table: _Table) -> tuple[np.ndarray, np.ndarray]:
        columns = _columns(table, [("data.features", feats), ("data.targets", targs)])
        x_cols, y_cols = [columns[c] for c in feats], [columns[c] for c in targs]
        lengths = {c: len(a) for c, a in zip(feats + targs, x_cols + y_cols)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{table.field}: columns of {table.source} differ in length: {lengths}")
        return np.stack(x_cols, axis=1), np.stack(y_cols, axis=1)

    X_tr, y_tr = arrays(train)
    if test_path is None:
        X_te, y_te = np.empty((0, len(feats))), np.empty((0, len(targs)))
    else:
        X_te, y_te = arrays(_read_table(test_path, "data.test_path"))
    return _Raw(feats, targs, X_tr, y_tr, X_te, y_te)


def _fit(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and population std; a constant column gets std 1."""
    mean = a.mean(axis=0)
    std = np.where(np.ptp(a, axis=0) == 0, 1.0, a.std(axis=0))
    return mean, std


@dataclass(frozen=True, eq=False)
class Arrays(_Columns):
    """A dataset as :func:`load_dataset` returns it, before the tensors: float64 arrays holding
    float32 values, split and (when ``standardization`` is set: ``(x_mean, x_std, y_mean,
    y_std)``) standardised."""

    splits: tuple[np.ndarray, ...]  # X_train, y_train, X_val, y_val, X_test, y_test
    standardization: tuple[np.ndarray, ...] | None = None


def load_dataset(name_or_path: str | os.PathLike[str], validation_fraction: float = 0.2, seed: int = 0,
                 *, features: Sequence[str] | None = None, targets: Sequence[str] | None = None,
                 test_path: str | os.PathLike[str] | None = None, standardize: bool = False) -> Dataset:
    """Load a built-in dataset or a user's CSV/NPZ file and split off the validation rows.

    Args:
        name_or_path: one of ``BUILTIN_DATASETS``, or a path ending in ``.csv`` (header row of
            column names, numeric cells) or ``.npz`` (see ``_read_npz`` for its two layouts).
        validation_fraction: share of the training rows moved to validation, in [0, 1):
            ``n_val = round(fraction * n_train)`` rows picked by
            ``np.random.default_rng(seed).permutation(n_train)``; both parts keep file order.
        seed: seed of the validation split.
        features: feature column names (files only); default: every column not a target.
        targets: target column names (files only); default: the last column.
        test_path: a file in either format holding the test set (files only); default: none.
        standardize: fit per-column mean/std on the training rows (validation rows excluded)
            and apply them to every split. ``iris-petal`` is always standardised this way.

    Returns:
        The float32 :class:`Dataset`.

    Raises:
        ValueError: unknown name, missing or unreadable file, missing/non-numeric/non-finite
            column, overlapping features and targets, or a fraction/seed out of range. The
            message starts with the field to change, e.g. ``data.features: ...``.
    """
    import torch

    arrays = load_arrays(name_or_path, validation_fraction, seed, features=features, targets=targets,
                         test_path=test_path, standardize=standardize)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    standardization = Standardization(*map(t, arrays.standardization)) if arrays.standardization else None
    X_tr, y_tr, X_va, y_va, X_te, y_te = map(t, arrays.splits)
    ds = Dataset(arrays.name, arrays.feature_names, arrays.target_names, X_tr, y_tr, X_va, y_va, X_te, y_te,
                 standardization)
    logger.debug("loaded dataset %s", ds.describe())
    return ds


def load_arrays(name_or_path: str | os.PathLike[str], validation_fraction: float = 0.2, seed: int = 0,
                *, features: Sequence[str] | None = None, targets: Sequence[str] | None = None,
                test_path: str | os.PathLike[str] | None = None, standardize: bool = False) -> Arrays:
    """:func:`load_dataset` (same arguments, same checks and errors) up to the tensors."""
    if isinstance(validation_fraction, bool) or not isinstance(validation_fraction, numbers.Real) \
            or not 0 <= validation_fraction < 1:
        raise ValueError(f"data.validation_fraction: must be a number in [0, 1), got {validation_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"data.seed: must be a non-negative integer, got {seed!r}")
    name = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and name in _BUILTINS:
        for field, value in (("features", features), ("targets", targets), ("test_path", test_path)):
            if value is not None:
                raise ValueError(f"data.{field}: only for .csv/.npz files, not the built-in {name!r}")
        raw = _BUILTINS[name]()
    elif Path(name).suffix.lower() in _FILE_SUFFIXES:
        raw = _from_files(name_or_path, test_path, features, targets)
    else:
        raise ValueError(f"data.dataset: unknown dataset {name!r}; built-ins: {', '.join(BUILTIN_DATASETS)}; "
                         f"a file path must end in .csv or .npz")

    n = raw.X_train.shape[0]
    n_val = round(validation_fraction * n)
    if n - n_val < 1:
        raise ValueError(f"data.validation_fraction: {validation_fraction} of {n} training rows "
                         f"leaves none to train on; use a smaller fraction or more rows")
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    X_tr, y_tr = raw.X_train[train_idx], raw.y_train[train_idx]
    splits = [X_tr, y_tr, raw.X_train[val_idx], raw.y_train[val_idx], raw.X_test, raw.y_test]

    standardization = None
    if standardize or raw.standardize:
        (x_mean, x_std), (y_mean, y_std) = _fit(X_tr), _fit(y_tr)
        splits = [(a - m) / s for a, (m, s) in zip(splits, [(x_mean, x_std), (y_mean, y_std)] * 3)]
        standardization = (x_mean, x_std, y_mean, y_std)
    return Arrays(name, raw.feature_names, raw.target_names, tuple(splits), standardization)
