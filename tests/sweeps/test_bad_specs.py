"""A corpus of malformed specs: each one must be refused with a SpecError whose every line
starts with the path of a field, and never with another exception, a traceback, or a side
effect. Invalid values come from the knob table itself (as scikit-learn's
``_param_validation`` generates them), plus junk structures, YAML tags, bad bytes, huge files.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sweeps.spec import (
    KNOBS,
    MAX_SPEC_BYTES,
    Knob,
    SpecError,
    SweepSpec,
    load_spec,
    parse_spec,
    spec_from_dict,
)

# A path: "spec", or fields joined by dots with [i] / [odd key] parts, then ": " and the rule.
PATH = re.compile(r"^(?:spec|[A-Za-z_][\w-]*|\[[^\]]*\])(?:\.[A-Za-z_][\w-]*|\[[^\]]*\])*: \S")
TOP_FIELDS = set(SweepSpec.model_fields)
# What pydantic's own rendering adds (a user's echoed value may hold any word, "http" included).
PYDANTIC_MARKS = ("errors.pydantic.dev", "For further information visit", "input_value=", "[type=")


def base() -> dict[str, Any]:
    return {"name": "t", "data": {"dataset": "seed-1d"}, "parameters": {}}


def refused(source: Any) -> list[str]:
    """Feed the source through the matching entry point; it must raise SpecError only."""
    with pytest.raises(SpecError) as info:
        if isinstance(source, (str, bytes)):
            parse_spec(source)
        else:
            spec_from_dict(source)
    problems = info.value.problems
    assert problems, "a SpecError must say why"
    for line in problems:
        assert PATH.match(line), f"no field path at the start of {line!r}"
        assert "\n" not in line, line
        assert not any(mark in line for mark in PYDANTIC_MARKS), line
        assert len(line) < 600, line
    assert str(info.value) == "\n".join(problems)
    return problems


# ---------------------------------------------------------------------------- from the knob table


def invalid_values(knob: Knob) -> Iterator[tuple[str, Any]]:
    """Values no parameter form of ``knob`` accepts, named for test ids."""
    yield "none", None
    yield "list", [1]
    yield "mapping", {"a": 1}
    if knob.kind == "choice":
        yield "unknown", "definitely-not-" + knob.name
        yield "empty", ""
        yield "number", 3
        yield "bool", True
        yield "case", knob.choices[0].upper()
        return
    if knob.kind == "bool":
        yield "int", 1
        yield "zero", 0
        yield "text", "true"
        return
    yield "bool", True
    yield "text", "12"
    yield "word", "lots"
    if knob.kind == "int":
        yield "fraction", 2.5  # (2.0 is fine: an integer written as a float, as YAML reads 2e0)
    else:
        yield "nan", math.nan
        yield "inf", math.inf
        yield "-inf", -math.inf
    if knob.low is not None:
        yield "below", knob.low if knob.low_open else (knob.low - 1 if knob.kind == "int" else knob.low - 0.5)
        yield "far-below", -10**6
    if knob.high is not None:
        yield "above", knob.high if knob.high_open else (knob.high + 1 if knob.kind == "int" else knob.high * 2)
        yield "far-above", 10**30


def good_value(knob: Knob) -> Any:
    return knob.choices[-1] if knob.kind == "choice" else (True if knob.kind == "bool" else knob.low or 1)


def table_corpus() -> Iterator[Any]:
    for knob in KNOBS.values():
        for label, bad in invalid_values(knob):
            yield pytest.param(knob.name, {"value": bad}, id=f"{knob.name}-value-{label}")
            yield pytest.param(knob.name, {"values": [good_value(knob), bad]}, id=f"{knob.name}-values-{label}")
            if knob.numeric:
                hi = knob.high if knob.high is not None and not knob.high_open else 10**6
                yield pytest.param(knob.name, {"min": bad, "max": hi}, id=f"{knob.name}-min-{label}")
                yield pytest.param(knob.name, {"distribution": "uniform", "min": good_value(knob), "max": bad},
                                   id=f"{knob.name}-max-{label}")
        yield pytest.param(knob.name, {"values": []}, id=f"{knob.name}-values-empty")
        yield pytest.param(knob.name, {"values": [good_value(knob)] * 2}, id=f"{knob.name}-values-repeated")
        yield pytest.param(knob.name, {"value": good_value(knob), "bogus": 1}, id=f"{knob.name}-unknown-key")
        yield pytest.param(knob.name, {}, id=f"{knob.name}-empty-mapping")
        yield pytest.param(knob.name, {"distribution": "normal", "mu": 0, "sigma": 1}, id=f"{knob.name}-normal")


TABLE_CORPUS = list(table_corpus())


def test_table_corpus_is_large() -> None:
    assert len(TABLE_CORPUS) >= 200


@pytest.mark.parametrize(("knob", "parameter"), TABLE_CORPUS)
def test_table_invalid_value(knob: str, parameter: dict[str, Any]) -> None:
    spec = base()
    spec["parameters"] = {knob: parameter}
    problems = refused(spec)
    assert any(p.startswith(f"parameters.{knob}") for p in problems), problems


@pytest.mark.parametrize(("knob", "parameter"), TABLE_CORPUS[::7])
def test_table_invalid_value_through_yaml(knob: str, parameter: dict[str, Any]) -> None:
    spec = base()
    spec["parameters"] = {knob: parameter}
    problems = refused(yaml.safe_dump(spec))
    assert any(p.startswith(f"parameters.{knob}") for p in problems), problems


# ---------------------------------------------------------------------------- generated junk

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.binary(max_size=8),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
not_a_mapping = junk.filter(lambda x: not isinstance(x, dict))
not_an_int = junk.filter(lambda x: isinstance(x, bool) or not isinstance(x, int)
                         and not (isinstance(x, float) and x.is_integer()))  # 2.0, 1e3: integers
odd_key = st.one_of(st.text(min_size=1, max_size=30), st.integers(), st.booleans()).filter(
    lambda k: k not in TOP_FIELDS)
JUNK = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@JUNK
@given(doc=not_a_mapping)
@example(doc=[{"http": None}])  # an echoed value may hold any word (CI drew this one)
def test_document_that_is_not_a_mapping(doc: Any) -> None:
    assert refused(doc)[0].startswith("spec: ")


@JUNK
@given(key=odd_key, value=junk)
def test_unknown_top_level_key(key: Any, value: Any) -> None:
    spec = base()
    spec[key] = value
    refused(spec)


@JUNK
@given(field=st.sampled_from(["metric", "data", "parameters"]), value=not_a_mapping)
def test_section_that_is_not_a_mapping(field: str, value: Any) -> None:
    spec = base()
    spec[field] = value
    assert any(p.startswith(field) for p in refused(spec))


@JUNK
@given(field=st.sampled_from(["run_cap", "concurrency", "seed"]), value=not_an_int)
def test_count_that_is_not_an_int(field: str, value: Any) -> None:
    spec = base()
    spec[field] = value
    assert any(p.startswith(field) for p in refused(spec))


@JUNK
@given(field=st.sampled_from(["name", "method", "device", "verify"]),
       value=junk.filter(lambda v: v not in ("tpe", "bayes", "random", "grid", "cmaes", "gp", "qmc",
                                              "auto", "cpu", "cuda", "gate", "record", "off")
                         and not (isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v))))
def test_word_field_with_junk(field: str, value: Any) -> None:
    spec = base()
    spec[field] = value
    assert any(p.startswith(field) for p in refused(spec))


@JUNK
@given(knob=st.sampled_from(sorted(KNOBS)), value=not_a_mapping)
def test_parameter_that_is_not_a_mapping(knob: str, value: Any) -> None:
    spec = base()
    spec["parameters"] = {knob: value}
    assert any(p.startswith(f"parameters.{knob}") for p in refused(spec))


@JUNK
@given(knob=st.sampled_from(sorted(KNOBS)),
       entry=st.dictionaries(st.text(max_size=10), junk, min_size=1, max_size=4).filter(
           lambda d: any(k not in ("value", "values", "min", "max", "distribution", "q") for k in d)))
def test_parameter_with_junk_keys(knob: str, entry: dict[str, Any]) -> None:
    spec = base()
    spec["parameters"] = {knob: entry}
    refused(spec)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(knob=st.sampled_from(sorted(KNOBS)),
       entry=st.fixed_dictionaries({}, optional={
           "value": junk, "values": st.lists(junk, max_size=3) | junk, "min": junk, "max": junk, "q": junk,
           "distribution": st.sampled_from(["constant", "categorical", "int_uniform", "uniform", "q_uniform",
                                            "log_uniform_values", "q_log_uniform_values", "normal"]) | junk}))
def test_parameter_forms_with_junk_values_never_crash(knob: str, entry: dict[str, Any]) -> None:
    spec = base()
    spec["parameters"] = {knob: entry}
    try:
        spec_from_dict(spec)
    except SpecError as exc:
        assert all(PATH.match(p) for p in exc.problems), exc.problems


@JUNK
@given(name=st.text(min_size=1, max_size=30).filter(lambda k: k not in KNOBS), entry=junk)
def test_unknown_knob(name: str, entry: Any) -> None:
    spec = base()
    spec["parameters"] = {name: entry}
    refused(spec)


@JUNK
@given(blob=st.binary(max_size=200))
def test_random_bytes(blob: bytes) -> None:
    refused(blob)


@JUNK
@given(text=st.text(max_size=200))
def test_random_text(text: str) -> None:
    refused(text)


@JUNK
@given(data=junk)
def test_anything_goes_in_any_field_without_crashing(data: Any) -> None:
    # Not every junk value is invalid here (a description may be any text): the rule is only
    # that nothing but a SpecError ever comes out.
    for field in sorted(TOP_FIELDS):
        spec = base()
        spec[field] = data
        try:
            spec_from_dict(spec)
        except SpecError as exc:
            assert all(PATH.match(p) for p in exc.problems), exc.problems


@pytest.mark.parametrize("depth", [40, 200, 5000])
def test_deeply_nested_junk(depth: int) -> None:
    nested: Any = 1
    for _ in range(min(depth, 200)):
        nested = [nested]
    spec = base()
    spec["parameters"] = {"lr": {"value": nested}}
    assert refused(spec) == ["spec: nested deeper than 32 levels"]
    assert refused("a: " + "[" * depth + "]" * depth)[0].startswith("spec: ")
    assert refused("a: " + "{b: " * depth + "1" + "}" * depth)[0].startswith("spec: ")


# ---------------------------------------------------------------------------- YAML and bytes


def tag_documents(marker: Path) -> list[str]:
    cmd = f"touch {marker}"
    return [
        f'!!python/object/apply:os.system ["{cmd}"]',
        f'name: !!python/object/apply:os.system ["{cmd}"]\n',
        f'name: t\ndata: {{dataset: seed-1d}}\nparameters:\n  lr: {{value: !!python/object/apply:os.system ["{cmd}"]}}\n',
        f'!!python/object/new:os.system ["{cmd}"]',
        f'!!python/object/apply:subprocess.check_output [["sh", "-c", "{cmd}"]]',
        "name: !!python/name:os.system\n",
        "name: !!python/module:os\n",
        "name: !!python/object:__main__.Evil {}\n",
        "name: !custom thing\n",
        "name: !!binary aGVsbG8=\ndata: {dataset: seed-1d}\nparameters: {}\n",
        "name: !!set {a, b}\n",
        "name: !!timestamp 2024-01-01\n",
    ]


@pytest.mark.parametrize("index", range(12))
def test_yaml_tags_are_refused_without_running(index: int, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    refused(tag_documents(marker)[index])
    assert not marker.exists()


BAD_YAML = [
    "name: t\nname: u\n",                               # duplicate key
    "name: t\nparameters:\n  lr: {value: 1}\n  lr: {value: 2}\n",
    "name: [unclosed\n",
    "name: t\n\tdata: 1\n",                             # tab indentation
    "a: &x [*x]\n",                                     # an alias inside itself
    "a: *nope\n",                                       # undefined alias
    "name: t\ndate: 2024-13-45\n",                      # a timestamp PyYAML cannot build
    "name: \x00\n",                                     # a control character
    "--- a\n--- b\n",                                   # two documents
    "? [a, b]\n: 1\n",                                  # an unhashable key
    '"\\ud800"',                                        # a lone surrogate
]


@pytest.mark.parametrize("text", BAD_YAML)
def test_bad_yaml(text: str) -> None:
    refused(text)


def test_alias_bomb() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    assert refused("\n".join(lines)) == ["spec: more than 100000 values (YAML aliases?); a spec is a page of settings"]


@pytest.mark.parametrize("blob", [b"\xff\xfe\x00n", b"name: caf\xe9\n", b"name: t\n\x80", "name: t\n".encode("utf-16"),
                                  b"\xc3\x28", b"\xed\xa0\x80"])
def test_not_utf8(blob: bytes) -> None:
    [line] = refused(blob)
    assert re.fullmatch(r"spec: not UTF-8 text \(byte 0x[0-9a-f]{2} at offset \d+\)", line), line


def test_ten_megabyte_file(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"name: t\n" + b"# padding\n" * (10 * 2**20 // 10))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.problems == ["spec: file is 10.0 MiB; the limit is 1 MiB"]
    assert refused(b"x" * (10 * 2**20)) == ["spec: file is 10.0 MiB; the limit is 1 MiB"]
    assert refused(b"x" * (MAX_SPEC_BYTES + 1))[0].startswith("spec: file is ")


@pytest.mark.parametrize("kind", ["missing", "directory", "device"])
def test_unreadable_paths(kind: str, tmp_path: Path) -> None:
    path = {"missing": tmp_path / "nope.yaml", "directory": tmp_path, "device": Path("/dev/zero")}[kind]
    if kind == "device" and not path.exists():
        pytest.skip("no /dev/zero")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert all(p.startswith("spec: ") for p in info.value.problems), info.value.problems


# ---------------------------------------------------------------------------- through the CLI


def cli() -> list[str]:
    script = Path(sys.executable).with_name("mlpsweep")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sweeps.cli"]


CLI_CASES = {
    "typo.yaml": b"nmae: t\ndata: {dataset: seed-1d}\nparameters: {optimzer: {value: adam}}\n",
    "log0.yaml": b"name: t\ndata: {dataset: seed-1d}\nparameters:\n  lr: {distribution: log_uniform_values, min: 0, max: 0.1}\n",
    "runcap.yaml": b"name: t\nrun_cap: 0\ndata: {dataset: seed-1d}\nparameters: {optimizer: {value: adamw}}\n",
    "tag.yaml": None,  # filled in with the marker path
    "latin1.yaml": b"name: caf\xe9\n",
    "list.yaml": b"- 1\n- 2\n",
    "empty.yaml": b"",
    "big.yaml": b"#" * (MAX_SPEC_BYTES + 10),
    "deep.yaml": b"a: " + b"[" * 3000 + b"]" * 3000,
}


def test_cli_refuses_bad_specs(tmp_path: Path) -> None:
    specs, cwd = tmp_path / "specs", tmp_path / "cwd"
    specs.mkdir()
    cwd.mkdir()
    marker = tmp_path / "pwned"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for name, content in CLI_CASES.items():
        if content is None:
            content = f'!!python/object/apply:os.system ["touch {marker}"]\n'.encode()
        path = specs / name
        path.write_bytes(content)
        done = subprocess.run([*cli(), "validate", str(path)], cwd=cwd, capture_output=True, text=True,
                              timeout=120, env=env)
        assert done.returncode == 2, (name, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr, (name, done.stderr)
        lines = done.stderr.splitlines()
        assert lines and all(line.startswith("mlpsweep validate: error: ") for line in lines), (name, lines)
        assert all(PATH.match(line.removeprefix("mlpsweep validate: error: ")) for line in lines), (name, lines)
        assert done.stdout == "", (name, done.stdout)
    assert list(cwd.iterdir()) == [], "validate must not create files"
    assert not marker.exists()


def test_the_command_runs_exit_handlers_and_flushes_its_output_before_it_exits(tmp_path):
    """``mlpsweep`` ends with os._exit (no teardown of every module): exit handlers still run,
    output still arrives whole, and the exit code is the command's."""
    from conftest import ROOT

    good = ROOT / "sweeps" / "examples" / sorted(p.name for p in (ROOT / "sweeps" / "examples").glob("*.yaml"))[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmethod: nope\n")
    script = ("import atexit, sys; from sweeps.cli import entry; "
              "atexit.register(lambda: print('handler ran', flush=True)); sys.argv = ['mlpsweep', *sys.argv[1:]]; entry()")
    for spec, code in ((good, 0), (bad, 2)):
        done = subprocess.run([sys.executable, "-c", script, "validate", str(spec)], cwd=tmp_path, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
        assert done.returncode == code, done.stderr
        assert done.stdout.rstrip().endswith("handler ran"), done.stdout
        assert (done.stderr if code else done.stdout).strip(), "the command said nothing"
