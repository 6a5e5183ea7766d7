"""A stored sweep continued with an edited spec: refused, naming what changed, unless asked for."""
from __future__ import annotations

import pytest

from conftest import TINY_SPEC
from sweeps import optuna_adapter as oa
from sweeps.cli import UsageError
from sweeps.cmd_run import check_continuation
from sweeps.spec import parse_spec, record_changes, spec_changes, spec_digest, spec_record, with_overrides


def _spec(**edits: str):
    text = TINY_SPEC.format(name="edit", run_cap=8, seed=0, epochs=60)
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    return parse_spec(text)


@pytest.fixture
def stored(tmp_path):
    """A journal holding sweep 'edit' as this spec created it."""
    spec = _spec()
    journal = str(tmp_path / "optuna.journal")
    oa.open_study(spec, journal, spec_digest(spec))
    return spec, journal


def test_changes_are_named_with_both_values():
    old = spec_record(_spec())
    new = spec_record(_spec(**{"max: 0.1": "max: 0.3", "value: 60": "value: 90"}))
    assert spec_changes(old, new) == ["parameters.lr.max: 0.1 -> 0.3", "parameters.epochs.value: 60 -> 90"]
    assert spec_changes(old, old) == []


def test_a_knob_set_where_its_default_was_and_an_added_stopping_rule_are_changes():
    old = spec_record(_spec())
    added = spec_record(_spec(**{"verify: gate": "verify: gate\nearly_terminate: {type: hyperband, min_iter: 20}",
                                 "  restarts:": "  weight_decay: {value: 0.001}\n  restarts:"}))
    assert spec_changes(old, added) == [
        "parameters.weight_decay.value: 0.0 -> 0.001",  # the record holds every knob, defaults filled in
        'early_terminate: - -> {"type": "hyperband", "min_iter": 20, "max_iter": 60, "eta": 3}']
    assert spec_changes(added, old)[-1] == 'early_terminate: {"type": "hyperband", "min_iter": 20, "max_iter": 60, ' \
                                           '"eta": 3} -> -'
    searched = spec_record(_spec(**{"optimizer: {value: adam}": "optimizer: {values: [adam, sgd]}"}))
    assert spec_changes(old, searched) == ['parameters.optimizer.value: "adam" -> -',
                                           'parameters.optimizer.values: - -> ["adam", "sgd"]']


def test_a_setting_an_older_record_lacks_is_read_with_its_default():
    """A later mlpsweep may add a setting, at any depth, with its default: the user changed nothing."""
    spec = _spec()
    new = spec_record(spec)
    old = {k: v for k, v in new.items() if k != "verify"}
    old["parameters"] = {k: v for k, v in new["parameters"].items() if k not in ("momentum", "tol")}
    old["data"] = {k: v for k, v in new["data"].items() if k != "standardize"}
    assert record_changes(old, spec) == []
    assert spec_changes(new, old) == ['data.standardize: false -> -', 'parameters.momentum: {"value": 0.0} -> -',
                                      'parameters.tol: {"value": 1e-06} -> -', 'verify: "gate" -> -']
    edited = _spec(**{"  restarts:": "  momentum: {value: 0.5}\n  restarts:"})
    assert record_changes(old, edited) == ['parameters.momentum.value: 0.0 -> 0.5']  # not the default
    unreadable = record_changes({**old, "parameters": "unreadable"}, spec)  # compared as stored
    assert 'data.standardize: - -> false' in unreadable and any(c.startswith('parameters: "unreadable" -> {')
                                                                for c in unreadable)


def test_the_target_decides_when_to_stop_not_what_a_trial_is():
    spec = _spec()
    aimed = _spec(**{"goal: minimize}": "goal: minimize, target: 0.01}"})
    assert spec_digest(aimed) == spec_digest(spec) and "target" not in spec_record(aimed)["metric"]
    older = {**spec_record(spec), "metric": {"name": "val_mse", "goal": "minimize", "target": 0.5}}
    assert spec_changes(older, spec_record(aimed)) == []  # a record written before the target was left out


def test_run_cap_concurrency_and_device_are_not_part_of_the_trials():
    spec = _spec()
    more = with_overrides(spec, run_cap=50, concurrency=1)
    assert spec_digest(more) == spec_digest(spec) and spec_changes(spec_record(spec), spec_record(more)) == []


def test_an_edited_spec_is_refused_naming_the_edit(stored):
    _, journal = stored
    edited = _spec(**{"min: 0.005": "min: 0.0001"})
    with pytest.raises(UsageError) as refused:
        check_continuation(edited, journal)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("spec: the stored sweep 'edit' ran with another spec (")
    assert "parameters.lr.min: 0.005 -> 0.0001" in message and "--allow-changed-spec" in message
    check_continuation(with_overrides(stored[0], run_cap=20), journal)  # more trials of the same spec: fine


def test_many_changes_are_summed_up_in_one_line(stored):
    _, journal = stored
    edited = _spec(**{"min: 0.005": "min: 0.0001", "max: 0.1": "max: 0.2", "min: 2": "min: 3", "max: 12": "max: 9",
                      "value: 60": "value: 61", "seed: 0": "seed: 1"})
    with pytest.raises(UsageError, match=r"\(seed: 0 -> 1; data.seed: 0 -> 1; .*; and 3 more\), and its trials"):
        check_continuation(edited, journal)


def test_a_new_sweep_or_an_older_mlpsweep_study_is_not_refused(tmp_path, stored):
    check_continuation(_spec(), str(tmp_path / "absent.journal"))
    assert not (tmp_path / "absent.journal").exists()
    spec, journal = stored
    check_continuation(parse_spec(TINY_SPEC.format(name="other", run_cap=8, seed=5, epochs=60)), journal)
    study = oa.load_study("edit", journal)
    study.set_user_attr(oa.SPEC_RECORD, None)  # as a study an mlpsweep without the record made
    check_continuation(_spec(**{"min: 0.005": "min: 0.0001"}), journal)


def test_continuing_with_the_edit_records_it_for_the_next_check(stored):
    spec, journal = stored
    edited = _spec(**{"min: 0.005": "min: 0.0001"})
    oa.open_study(edited, journal, spec_digest(edited))  # what --allow-changed-spec lets the driver do
    stored_now = oa.stored_spec("edit", journal)
    assert (stored_now.digest, stored_now.record) == (spec_digest(edited), spec_record(edited))
    check_continuation(edited, journal)
    with pytest.raises(UsageError, match=r"parameters\.lr\.min: 0\.0001 -> 0\.005"):
        check_continuation(spec, journal)


@pytest.mark.parametrize("edit, named", [
    ({"activation: {values: [tanh, sigmoid]}": "activation: {values: [tanh, relu]}"},
     "parameters.activation: values ['tanh', 'sigmoid'] -> values ['tanh', 'relu']"),
    ({"lr: {distribution: log_uniform_values, min: 0.005, max: 0.1}": "lr: {min: 0.005, max: 0.1}"},
     "parameters.lr: numbers 0.005..0.1 on a log scale -> numbers 0.005..0.1"),
    ({"width: {min: 2, max: 12}": "width: {values: [2, 4, 8]}"}, "parameters.width: integers 2..12 -> values [2, 4, 8]"),
])
def test_an_edit_optuna_cannot_continue_is_refused_even_when_allowed(stored, edit, named):
    """Optuna refuses to sample a parameter of a study otherwise than its trials did: the run
    crashed on its first trial and left it RUNNING for every later run to crash on again."""
    spec, journal = stored
    oa.open_study(spec, journal, spec_digest(spec)).ask()  # a trial that sampled the stored spec
    study = oa.load_study("edit", journal)
    trial = study.ask()
    oa.suggest_params(trial, spec)
    for allowed in (False, True):
        with pytest.raises(UsageError) as refused:
            check_continuation(_spec(**edit), journal, allowed)
        assert str(refused.value) == (f"spec: the stored sweep 'edit' sampled a parameter otherwise ({named}), and "
                                      "Optuna cannot change that within one study; give this spec another name to "
                                      "start a new sweep")
    check_continuation(_spec(**{"max: 12": "max: 30"}), journal, allow_changed=True)  # a wider range: fine


def test_a_sqlite_storage_with_a_driver_is_checked_too(tmp_path):
    spec = _spec()
    storage = f"sqlite+pysqlite:///{tmp_path}/optuna.db"
    oa.open_study(spec, storage, spec_digest(spec))
    with pytest.raises(UsageError, match=r"parameters\.lr\.min: 0\.005 -> 0\.0001"):
        check_continuation(_spec(**{"min: 0.005": "min: 0.0001"}), storage)


def test_a_study_from_before_the_record_gets_one_when_continued(stored):
    spec, journal = stored
    study = oa.load_study("edit", journal)
    study.set_user_attr(oa.SPEC_RECORD, None)
    assert oa.stored_spec("edit", journal).record is None
    oa.open_study(spec, journal, spec_digest(spec))  # the same spec, continued by this mlpsweep
    assert oa.stored_spec("edit", journal).record == spec_record(spec)


def test_a_sqlite_storage_url_with_a_query_is_the_same_file(tmp_path):
    spec = _spec()
    oa.open_study(spec, f"sqlite:///{tmp_path}/optuna.db", spec_digest(spec))
    with pytest.raises(UsageError, match=r"parameters\.lr\.min: 0\.005 -> 0\.0001"):
        check_continuation(_spec(**{"min: 0.005": "min: 0.0001"}), f"sqlite:///{tmp_path}/optuna.db?timeout=30")


def test_a_grid_keeps_its_points_even_when_edits_are_allowed(tmp_path):
    """Optuna's grid sampler skips trials of another grid while the driver's cap counts them: an
    edited grid ran none of its new points."""
    grid = "method: grid\n" + TINY_SPEC.format(name="g", run_cap=8, seed=0, epochs=60).replace("method: tpe\n", "") \
        .replace("width: {min: 2, max: 12}", "width: {values: [2, 3]}") \
        .replace("lr: {distribution: log_uniform_values, min: 0.005, max: 0.1}", "lr: {value: 0.01}")
    journal = str(tmp_path / "optuna.journal")
    spec = parse_spec(grid)
    oa.open_study(spec, journal, spec_digest(spec))
    for edited in (grid.replace("depth: {values: [1, 2]}", "depth: {values: [1, 2, 3]}"),
                   grid.replace("method: grid", "method: random")):
        check = parse_spec(edited)
        if check.method == "grid":
            with pytest.raises(UsageError, match=r"^spec: the stored grid sweep 'g' has other points \(parameters\.depth"):
                check_continuation(check, journal, allow_changed=True)
        else:  # leaving the grid for another sampler: an ordinary edit
            check_continuation(check, journal, allow_changed=True)


def test_a_knob_no_trial_of_the_new_spec_samples_is_not_refused(tmp_path):
    sgd = _spec(**{"optimizer: {value: adam}": "optimizer: {value: sgd}\n  momentum: {min: 0.1, max: 0.9}"})
    journal = str(tmp_path / "optuna.journal")
    study = oa.open_study(sgd, journal, spec_digest(sgd))
    oa.suggest_params(study.ask(), sgd)  # a trial that sampled momentum from a range
    adam = _spec(**{"  restarts:": "  momentum: {values: [0.5, 0.9]}\n  restarts:"})  # adam: momentum is never sampled
    check_continuation(adam, journal, allow_changed=True)
    with pytest.raises(UsageError, match=r"parameters\.momentum: numbers 0\.1\.\.0\.9 -> values \[0\.5, 0\.9\]"):
        check_continuation(parse_spec(TINY_SPEC.format(name="edit", run_cap=8, seed=0, epochs=60).replace(
            "optimizer: {value: adam}", "optimizer: {value: sgd}\n  momentum: {values: [0.5, 0.9]}")), journal, True)


def test_a_record_is_read_as_this_mlpsweep_reads_it(stored):
    """A range set to one value shows the value; a digest that changed only with how mlpsweep
    writes a spec is no edit and warns of none."""
    import logging

    spec, journal = stored
    changes = record_changes(spec_record(spec), _spec(**{"lr: {distribution: log_uniform_values, min: 0.005, max: 0.1}":
                                                          "lr: {value: 0.001}"}))
    assert 'parameters.lr.value: - -> 0.001' in changes and any(c.startswith("parameters.lr.min") for c in changes)
    study = oa.load_study("edit", journal)
    study.set_user_attr(oa.SPEC_DIGEST, "written-otherwise")
    seen: list[str] = []
    catch = logging.Handler()
    catch.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    oa.log.addHandler(catch)
    try:
        check_continuation(spec, journal)
        oa.open_study(spec, journal, spec_digest(spec))
    finally:
        oa.log.removeHandler(catch)
    assert not seen and oa.stored_spec("edit", journal).digest == spec_digest(spec)
