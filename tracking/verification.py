"""Backprop verification runs in MLflow: record one, find one, or verify only when none exists.

A verification is its own run, named ``verify <architecture>`` and tagged
``mlpsweep.kind=verification``, ``mlpsweep.architecture=<canonical>`` and
``mlpsweep.verified=pass|fail``; the tags make it findable, so an architecture already verified
in a store is not verified again (and Ray's at-least-once retries do not pile up duplicates).
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, ViewType

from models.config import canonical_architecture
from models.verdict import GradCheckReport
from tracking.bulk import write_run
from tracking.search import search_by_tags, tags_filter

__all__ = [
    "KIND_TAG",
    "ARCHITECTURE_TAG",
    "VERDICT_TAG",
    "SWEEP_TAG",
    "REPORT_ARTIFACT",
    "VerificationRecord",
    "record_verification",
    "find_verification",
    "known_verdicts",
    "load_verification_report",
    "verify_and_record",
]

log = logging.getLogger(__name__)

KIND_TAG = "mlpsweep.kind"
KIND_VERIFICATION = "verification"
ARCHITECTURE_TAG = "mlpsweep.architecture"
VERDICT_TAG = "mlpsweep.verified"
SWEEP_TAG = "mlpsweep.sweep"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
REPORT_ARTIFACT = "verification.json"
_MAX_NOTE_CHARS = 7000  # MLflow caps tag values at 8000 characters

Runner = Callable[..., GradCheckReport]


@dataclass(frozen=True)
class VerificationRecord:
    """Outcome of :func:`verify_and_record`.

    ``reused`` is True when the verdict came from an earlier run; ``report`` is the fresh report,
    or None when reused (read it back with :func:`load_verification_report`).
    """

    run_id: str
    verdict: str  # "pass" | "fail"
    reused: bool
    report: GradCheckReport | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


def record_verification(
    client: MlflowClient,
    experiment_id: str,
    report: GradCheckReport,
    *,
    parent_run_id: str | None = None,
    sweep: str | None = None,
) -> str:
    """Record a verification report as its own FINISHED run.

    Args:
        client: the tracking client.
        experiment_id: where the run goes.
        report: from :func:`models.verify.verify_backprop`.
        parent_run_id: nest the run under this one (sets ``mlflow.parentRunId``).
        sweep: the sweep's name, tagged as ``mlpsweep.sweep``.

    Returns:
        The new run's id.

    Raises:
        MlflowException: the store refused; no run is left (see :func:`tracking.bulk.write_run`).
    """
    tags = {
        KIND_TAG: KIND_VERIFICATION,
        ARCHITECTURE_TAG: report.architecture,
        VERDICT_TAG: report.verdict,
        NOTE_TAG: "```\n" + report.format_table()[:_MAX_NOTE_CHARS] + "\n```",
    }
    if parent_run_id is not None:
        tags[PARENT_TAG] = parent_run_id
    if sweep is not None:
        tags[SWEEP_TAG] = sweep

    def files(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / REPORT_ARTIFACT).write_text(json.dumps(report.to_dict(), indent=2))

    run_id = write_run(client, experiment_id, run_name=f"verify {report.architecture}", tags=tags,
                       params=_params(report), metrics=_metrics(report), artifacts=files,
                       status=RunStatus.to_string(RunStatus.FINISHED))
    log.info("recorded verification of %s: %s (run %s)", report.architecture, report.verdict, run_id)
    return run_id


_FINISHED_VERIFICATIONS = f"tags.\"{KIND_TAG}\" = '{KIND_VERIFICATION}' and attributes.status = 'FINISHED'"


def _verdict(run: Any) -> str:
    return str(run.data.tags.get(VERDICT_TAG, "fail"))


def find_verification(client: MlflowClient, experiment_id: str | None, architecture: str) -> tuple[str, str] | None:
    """The newest FINISHED verification run of ``architecture``, as ``(run_id, verdict)``.

    Args:
        client: the tracking client.
        experiment_id: the experiment to search; None searches every active experiment of the store.
        architecture: canonical form, e.g. ``"1-10-10-1:sigmoid"``.

    Returns:
        ``(run_id, "pass" | "fail")``, or None when the architecture was never verified there.
    """
    filter_string = f"{_FINISHED_VERIFICATIONS} and {tags_filter({ARCHITECTURE_TAG: architecture})}"
    ids = [experiment_id] if experiment_id is not None else _active_experiment_ids(client)
    if not ids:
        return None
    runs = client.search_runs(ids, filter_string, ViewType.ACTIVE_ONLY, max_results=1, order_by=["attributes.start_time DESC"])
    if not runs:
        return None
    return runs[0].info.run_id, _verdict(runs[0])


def known_verdicts(client: MlflowClient) -> dict[str, str]:
    """Every architecture verified anywhere in the store, with its newest verdict: one bulk read
    (:func:`tracking.search.search_by_tags`), which a sweep waits for before its first trial, so
    a store holding many sweeps' verifications costs it milliseconds, not seconds."""
    ids = _active_experiment_ids(client)
    runs = search_by_tags(client, ids, {KIND_TAG: KIND_VERIFICATION}, tags_only=True) if ids else []
    verdicts: dict[str, str] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True):
        architecture = run.data.tags.get(ARCHITECTURE_TAG)
        if run.info.status == "FINISHED" and architecture and architecture not in verdicts:
            verdicts[architecture] = _verdict(run)
    return verdicts


def load_verification_report(client: MlflowClient, run_id: str) -> GradCheckReport:
    """Read the report a verification run stored as ``verification.json``.

    Raises:
        MlflowException: the run or its artifact does not exist.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, REPORT_ARTIFACT, tmp)
        return GradCheckReport.from_dict(json.loads(Path(path).read_text()))


def verify_and_record(
    client: MlflowClient,
    experiment_id: str,
    sizes: Sequence[int],
    activation: str,
    *,
    parent_run_id: str | None = None,
    sweep: str | None = None,
    force: bool = False,
    runner: Runner | None = None,
    **verify_kwargs: Any,
) -> VerificationRecord:
    """Verify an architecture and record it, unless the experiment already holds a verdict.

    Args:
        client: the tracking client.
        experiment_id: where to look for an earlier verdict and record a new one.
        sizes, activation: the architecture.
        parent_run_id, sweep: passed to :func:`record_verification`.
        force: verify and record again even if a verdict exists.
        runner: runs the verification (``runner(sizes, activation, **verify_kwargs)``); default
            :func:`models.verify.verify_backprop` in-process (imported here only then: the
            sweep's writer records verdicts without torch), or e.g.
            :func:`workers.verification.run_remote` to run it on Ray.
        **verify_kwargs: settings for :func:`models.verify.verify_backprop`.

    Returns:
        The run id and verdict, and whether they were reused.

    Raises:
        ValueError: bad sizes or activation.
    """
    architecture = canonical_architecture(sizes, activation)
    if not force:
        found = find_verification(client, experiment_id, architecture)
        if found is not None:
            log.info("%s already verified in run %s: %s", architecture, *found)
            return VerificationRecord(run_id=found[0], verdict=found[1], reused=True)
    if runner is None:
        from models.verify import verify_backprop as runner
    report = runner(list(sizes), activation, **verify_kwargs)
    run_id = record_verification(client, experiment_id, report, parent_run_id=parent_run_id, sweep=sweep)
    return VerificationRecord(run_id=run_id, verdict=report.verdict, reused=False, report=report)


def _metrics(report: GradCheckReport) -> list[Metric]:
    now = int(time.time() * 1000)
    values: dict[str, float | None] = {
        "max_rel_err_autograd": report.max_rel_err_autograd,
        "max_rel_err_fd": report.max_rel_err_fd,
        "update_max_abs_err": report.update_check.max_abs_err,
        "verification_seconds": report.seconds,
        "verified": 1.0 if report.passed else 0.0,
    }
    for t in report.tensors:  # a gradient that could not be compared has no metric; the JSON says why
        values[f"rel_err_autograd.{t.name}"] = t.max_rel_err_autograd
        values[f"rel_err_fd.{t.name}"] = t.max_rel_err_fd
    return [Metric(key, float(v), now, 0) for key, v in values.items() if v is not None]


def _params(report: GradCheckReport) -> list[Param]:
    tol = report.tolerances
    values = {
        "sizes": ",".join(str(s) for s in report.sizes),
        "activation": report.activation,
        "loss": report.loss,
        "seed": report.seed,
        "samples": report.samples,
        "eps": tol.eps,
        "atol": tol.atol,
        "rtol": tol.rtol,
        "fd_atol": tol.fd_atol,
        "fd_rtol": tol.fd_rtol,
        "max_fd_coords": report.max_fd_coords,
        "kink_margin": report.kink_guard.margin,
        "lr": report.update_check.lr,
    }
    return [Param(key, str(v)) for key, v in values.items()]


def _active_experiment_ids(client: MlflowClient) -> list[str]:
    ids: list[str] = []
    token: str | None = None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return ids
