"""The backprop verification job on Ray: one task per architecture.

Ray is imported only when a remote handle is asked for, so this module (and :func:`run_verification`,
a plain function) imports and runs without Ray initialised.
"""
from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Sequence

from models.verify import GradCheckReport, verify_backprop

if TYPE_CHECKING:
    from ray.remote_function import RemoteFunction

__all__ = ["run_verification", "remote_verification", "run_remote"]

log = logging.getLogger(__name__)


def run_verification(sizes: Sequence[int], activation: str, **kwargs: Any) -> GradCheckReport:
    """Verify one architecture's backprop in this process.

    Args:
        sizes: layer widths ``[d_in, ..., d_out]``.
        activation: a registered activation name.
        **kwargs: settings for :func:`models.verify.verify_backprop` (seed, samples, tolerances...).

    Returns:
        The verification report.

    Raises:
        ValueError: bad sizes, activation or settings.
    """
    report = verify_backprop(list(sizes), activation, **kwargs)
    log.info("verified %s: %s in %.2f s", report.architecture, report.verdict, report.seconds)
    return report


@functools.lru_cache(maxsize=None)
def remote_verification(num_cpus: float = 1) -> RemoteFunction:
    """The Ray remote version of :func:`run_verification` (created on first use, then cached).

    The task is pure and deterministic, so Ray's at-least-once retries are harmless.
    """
    import ray

    return ray.remote(num_cpus=num_cpus)(run_verification)


def run_remote(sizes: Sequence[int], activation: str, **kwargs: Any) -> GradCheckReport:
    """Run :func:`run_verification` as a Ray task and wait for it (Ray must be initialised).

    Usable as the ``runner`` of :func:`tracking.verification.verify_and_record`.
    """
    import ray

    return ray.get(remote_verification().remote(list(sizes), activation, **kwargs))


def __getattr__(name: str) -> Any:
    # ``verification_task``: the remote handle, built lazily on first attribute access
    if name == "verification_task":
        return remote_verification()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
