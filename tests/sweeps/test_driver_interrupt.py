"""Ctrl+C that lands inside an Optuna tell must not leave a trial half told (CI saw KeyError: 3)."""
from __future__ import annotations

import os
import signal

import optuna
import pytest

from conftest import write_spec
from sweeps import optuna_adapter as oa
from sweeps.driver import SweepDriver
from sweeps.spec import load_spec
from workers.backend import InProcessBackend


@pytest.mark.parametrize("at_tell", [1, 3])
def test_ctrl_c_inside_a_tell_is_acted_on_after_it(tmp_path, monkeypatch, at_tell):
    spec = load_spec(write_spec(tmp_path, name="sigint", run_cap=8, epochs=20))
    storage = f"sqlite:///{tmp_path}/optuna.db"
    real_tell = oa.tell
    calls = []

    def tell_with_ctrl_c(study, trial, *args, **kwargs):
        calls.append(trial)
        if len(calls) == at_tell:
            os.kill(os.getpid(), signal.SIGINT)  # delivered while this tell is under way
        return real_tell(study, trial, *args, **kwargs)

    monkeypatch.setattr(oa, "tell", tell_with_ctrl_c)
    driver = SweepDriver(spec, InProcessBackend(2), None, storage)
    before = signal.getsignal(signal.SIGINT)  # earlier tests (Ray) may have installed their own
    with pytest.raises(KeyboardInterrupt):
        driver.run()
    assert signal.getsignal(signal.SIGINT) is before, "Ctrl+C handler not restored"

    trials = optuna.load_study(study_name="sigint", storage=storage).trials
    told = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    # the tell under way finished, with its metrics; trials already written were told on the way out
    assert len(told) >= at_tell and all("val_mse" in t.user_attrs for t in told)
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    interrupted = [t for t in trials if t.user_attrs.get(oa.INTERRUPTED)]
    queued = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    assert len(told) + len(interrupted) + len(queued) == len(trials)
    assert len(queued) == len(interrupted)  # every trial in flight is queued again


def test_a_resumed_sweep_trains_its_requeued_trials_as_an_uninterrupted_one(tmp_path, monkeypatch):
    # a trial queued again after Ctrl+C gets a new number, but keeps its first one's seed: its
    # numbers are those the uninterrupted sweep gives that first trial
    spec = load_spec(write_spec(tmp_path, name="again", run_cap=6, epochs=20))
    real_tell = oa.tell
    calls = []

    def tell_with_ctrl_c(study, trial, *args, **kwargs):
        calls.append(trial)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real_tell(study, trial, *args, **kwargs)

    monkeypatch.setattr(oa, "tell", tell_with_ctrl_c)
    stopped = f"sqlite:///{tmp_path}/stopped.db"
    with pytest.raises(KeyboardInterrupt):
        SweepDriver(spec, InProcessBackend(2), None, stopped).run()
    monkeypatch.setattr(oa, "tell", real_tell)
    SweepDriver(spec, InProcessBackend(2), None, stopped).run()  # the same command again
    whole = f"sqlite:///{tmp_path}/whole.db"
    SweepDriver(spec, InProcessBackend(2), None, whole).run()

    def complete(storage):
        return [t for t in optuna.load_study(study_name="again", storage=storage).trials
                if t.state == optuna.trial.TrialState.COMPLETE]

    reference = {t.number: t for t in complete(whole)}
    rerun = [t for t in complete(stopped) if oa.SEED_TRIAL in t.user_attrs]
    assert rerun, "no trial was queued again"
    for t in rerun:
        first = reference[t.user_attrs[oa.SEED_TRIAL]]
        assert t.number != first.number and t.params == first.params
        assert (t.value, t.user_attrs["train_mse"]) == (first.value, first.user_attrs["train_mse"])
