"""Every plot function turns synthetic data into a real PNG, and refuses when there is nothing to draw."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from tracking import plots
from tracking.plots import Curve, HistoryPoint, ParamAxis, Split, Spread, WidthPoint

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG: bad signature"
    assert data[12:16] == b"IHDR", "not a PNG: IHDR is not the first chunk"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_png(data: bytes, min_px: int = 300) -> None:
    width, height = png_size(data)
    assert width >= min_px and height >= min_px, (width, height)
    assert data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"), "PNG is truncated"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_png_checker_rejects_what_is_not_a_png() -> None:
    with pytest.raises(AssertionError):
        png_size(b"GIF89a" + b"\x00" * 30)
    tiny = PNG_SIGNATURE + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 50, 40) + b"\x00" * 9 + b"IEND\xaeB`\x82"
    with pytest.raises(AssertionError):
        assert_png(tiny)


def test_history(rng) -> None:
    points = [HistoryPoint(i, "COMPLETE", float(v)) for i, v in enumerate(10 ** rng.uniform(-3, 0, 30))]
    points += [HistoryPoint(30, "FAIL", None), HistoryPoint(31, "PRUNED", None)]
    assert_png(plots.plot_history(points, "val_mse"))


def test_history_without_a_finite_value_fails() -> None:
    with pytest.raises(ValueError, match="finite"):
        plots.plot_history([HistoryPoint(0, "FAIL", None), HistoryPoint(1, "COMPLETE", float("nan"))])


def test_importances() -> None:
    assert_png(plots.plot_importances({"width": 0.6, "lr": 0.3, "activation": 0.1}))
    with pytest.raises(ValueError):
        plots.plot_importances({})
    with pytest.raises(ValueError):
        plots.plot_importances({"lr": float("nan")})


def test_parallel_coordinates_with_search_space_and_gaps(rng) -> None:
    params = [{"depth": int(d), "width": int(w), "activation": a, "lr": float(lr), **({"width_2": 4} if d == 2 else {})}
              for d, w, a, lr in zip(rng.integers(1, 3, 20), rng.integers(1, 100, 20),
                                     rng.choice(["tanh", "relu", "sigmoid"], 20), 10 ** rng.uniform(-3, -1, 20))]
    values = list(10 ** rng.uniform(-2, 1, 20))
    axes = [ParamAxis("depth", "categorical", (1, 2)), ParamAxis("width", "log", low=1, high=100),
            ParamAxis("width_2", "categorical", (2, 4, 8)), ParamAxis("activation", "categorical", ("tanh", "relu", "sigmoid")),
            ParamAxis("lr", "log", low=1e-3, high=1e-1)]
    assert_png(plots.plot_parallel_coordinates(params, values, axes))
    assert_png(plots.plot_parallel_coordinates(params, values, plots.infer_axes(params)))


def test_parallel_coordinates_fails_without_enough_trials() -> None:
    axes = [ParamAxis("width", "linear")]
    with pytest.raises(ValueError, match="two trials"):
        plots.plot_parallel_coordinates([{"width": 3}, {"width": 4}], [0.1, float("inf")], axes)
    with pytest.raises(ValueError, match="no varying"):
        plots.plot_parallel_coordinates([{"width": 3}, {"width": 4}], [0.1, 0.2], [])
    with pytest.raises(ValueError, match="parameter sets"):
        plots.plot_parallel_coordinates([{"width": 3}], [0.1, 0.2], axes)


def test_infer_axes_kinds() -> None:
    axes = {a.name: a for a in plots.infer_axes([{"w": 1, "lr": 0.001, "act": "tanh", "k": 5},
                                                 {"w": 3, "lr": 0.1, "act": "relu", "k": 5}])}
    assert axes["w"].kind == "linear" and axes["lr"].kind == "log" and axes["act"].kind == "categorical"
    assert "k" not in axes  # a single value is no axis


def test_mse_vs_width_shows_overfitting_shape() -> None:
    widths = [1, 2, 5, 10, 20, 50, 100]
    points = []
    for group, scale in (("depth 1, sigmoid", 1.0), ("depth 2, tanh", 2.0)):
        for w in widths:
            train = 0.3 / w * scale
            points.append(WidthPoint(w, group, train, 0.01 + 0.3 / w + 1e-4 * w * w, 0.012 + 0.3 / w + 2e-4 * w * w))
            points.append(WidthPoint(w, group, train * 1.5, None, None))  # a worse sibling, no validation
    assert_png(plots.plot_mse_vs_width(points))
    only_train = [WidthPoint(w, "g", 1.0 / w, None, None) for w in widths]
    assert_png(plots.plot_mse_vs_width(only_train, metric="train_mse"))


def test_mse_vs_width_fails_without_points() -> None:
    with pytest.raises(ValueError):
        plots.plot_mse_vs_width([WidthPoint(0, "g", 0.1, 0.1, 0.1), WidthPoint(3, "g", None, None, None)])


def _splits_1d(rng) -> list[Split]:
    out = []
    for name, n in (("train", 80), ("val", 20), ("test", 123)):
        x = np.sort(rng.uniform(0, 4 * np.pi, n))[:, None]
        out.append(Split(name, x, np.sin(x) + rng.normal(0, 0.1, x.shape)))
    return out


def test_fit_1d_units_overlaid_and_in_their_own_row(rng) -> None:
    x = np.linspace(0, 4 * np.pi, 200)
    small_units = np.stack([np.sin(x) * 0.5, np.cos(x) * 0.3], axis=-1)[None]  # (1, G, 2)
    assert_png(plots.plot_fit_1d(_splits_1d(rng), x, np.sin(x)[:, None], small_units))
    big_units = small_units * 40
    assert_png(plots.plot_fit_1d(_splits_1d(rng), x, np.sin(x)[:, None], big_units))
    assert_png(plots.plot_fit_1d(_splits_1d(rng), x, np.sin(x)[:, None], None))


def test_fit_1d_checks_shapes(rng) -> None:
    x = np.linspace(0, 1, 50)
    with pytest.raises(ValueError, match="units"):
        plots.plot_fit_1d(_splits_1d(rng), x, x[:, None], np.zeros((1, 49, 3)))
    with pytest.raises(ValueError, match="no data"):
        plots.plot_fit_1d([Split("train", np.zeros((0, 1)), np.zeros((0, 1)))], x, x[:, None])
    with pytest.raises(ValueError, match="expected X"):
        plots.plot_fit_1d([Split("train", np.zeros((5, 2)), np.zeros((5, 1)))], x, x[:, None])


def test_fit_2d_one_and_two_outputs(rng) -> None:
    X = rng.uniform(-1, 1, (100, 2))
    x1, x2 = np.linspace(-1, 1, 40), np.linspace(-1, 1, 30)
    g1, g2 = np.meshgrid(x1, x2)
    one = [Split("train", X[:80], (X[:80] ** 2).sum(1, keepdims=True)), Split("test", X[80:], (X[80:] ** 2).sum(1, keepdims=True))]
    assert_png(plots.plot_fit_2d(one, x1, x2, (g1**2 + g2**2)[None]))
    rot = [Split("train", X, np.column_stack([-X[:, 1], X[:, 0]]))]
    assert_png(plots.plot_fit_2d(rot, x1, x2, np.stack([-g2, g1]), target_names=("y1", "y2")))
    with pytest.raises(ValueError, match="z"):
        plots.plot_fit_2d(one, x1, x2, (g1**2)[None].T)


def test_learning_curves(rng) -> None:
    curves = [Curve(f"trial {i}", list(np.exp(-np.linspace(0, 5, 100)) + 0.01 * (i + 1)),
                    list(np.exp(-np.linspace(0, 4, 100)) + 0.02 * (i + 1))) for i in range(5)]
    assert_png(plots.plot_learning_curves(curves))
    assert_png(plots.plot_learning_curves([Curve("no validation", [1.0, 0.5, -0.1])]))  # linear axis when <= 0
    with pytest.raises(ValueError):
        plots.plot_learning_curves([Curve("empty", [], [])])


def test_restart_spread(rng) -> None:
    spreads = [Spread(f"#{i}", list(10 ** rng.uniform(-2, 0, 10)), chosen=int(rng.integers(0, 10))) for i in range(8)]
    spreads.append(Spread("#99", [0.1, 0.2], chosen=None))
    assert_png(plots.plot_restart_spread(spreads))
    with pytest.raises(ValueError):
        plots.plot_restart_spread([Spread("#0", [float("nan")])])


def test_plots_leave_pyplot_alone() -> None:
    import sys

    had = "matplotlib.pyplot" in sys.modules
    plots.plot_importances({"a": 1.0})
    assert ("matplotlib.pyplot" in sys.modules) == had


def test_import_skips_the_property_listings_only_while_importing() -> None:
    from conftest import fresh_python

    out = fresh_python(
        "import matplotlib.artist as artist\n"
        "real = artist.kwdoc\n"
        "from tracking import plots\n"
        "from matplotlib.lines import Line2D\n"
        "print(artist.kwdoc is real)\n"
        "print('markevery' in (Line2D.set.__doc__ or ''))\n"  # matplotlib would list it here
        "print('markevery' in artist.kwdoc(Line2D))\n"
        "print(len(plots.plot_importances({'a': 1.0})) > 1000)\n")
    assert out.split() == ["True", "False", "True", "True"]
