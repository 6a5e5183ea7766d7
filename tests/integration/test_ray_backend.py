"""The Ray backend on a real local Ray: each worker holds at most ``depth`` jobs, a job goes to
the worker holding the fewest, and a job beyond every worker's depth waits in the backend; under
``device: cuda`` each worker holds a share of a GPU."""
from __future__ import annotations

import contextlib

import pytest

from conftest import write_spec
from sweeps.driver import build_trial_config
from sweeps.spec import load_spec
from workers.backend import Finished, JobUpdate

pytestmark = pytest.mark.integration


def test_jobs_are_spread_then_queued_and_all_finish(tmp_path):
    import ray

    from workers.ray_backend import RayBackend, connect

    spec = load_spec(write_spec(tmp_path, name="held", epochs=30))
    params = {"width": 4, "activation": "tanh", "optimizer": "adam", "lr": 0.01, "restarts": 1, "epochs": 30}
    connect(None, num_cpus=2)
    try:
        backend = RayBackend(2, depth=2)
        for job in range(5):
            backend.start(job, [build_trial_config(spec, job, params, (1, 1))])
        assert backend.load == [2, 2]
        assert sorted(backend.owner.values()) == [0, 0, 1, 1] and 4 not in backend.owner
        assert [job for job, _ in backend.queue] == [4]
        finished = []
        while backend.pending():
            for event in backend.events(timeout=60):
                assert isinstance(event, JobUpdate) and event.done
                finished += [e.result.number for e in event.events if isinstance(e, Finished)]
        assert sorted(finished) == [0, 1, 2, 3, 4]
        assert backend.load == [0, 0] and not backend.queue
        backend.close()
    finally:
        ray.shutdown()



@contextlib.contextmanager
def _local_ray(cpus: int, gpus: int):
    """A local Ray declaring ``gpus`` GPUs (logical: none need exist), shut down at the end."""
    import ray

    ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_cuda_workers_ask_ray_for_a_share_of_a_gpu_each():
    """Three workers on two GPUs: half a GPU each, so that Ray places them where GPUs are."""
    from sweeps.cmd_run import start_backend

    with _local_ray(3, 2) as ray:
        backend = start_backend("the-test-cluster", 3, device="cuda")
        assert backend.wait_ready(timeout=60) == 3
        assert ray.available_resources().get("GPU", 0.0) == pytest.approx(0.5)
        assert ray.available_resources().get("CPU", 0.0) == 0.0
        backend.close()


def test_device_cuda_on_a_cluster_without_gpus_is_a_usage_error():
    from sweeps.cli import UsageError
    from sweeps.cmd_run import start_backend

    with _local_ray(2, 0) as ray:
        with pytest.raises(UsageError, match=r"^device: cuda, but the Ray cluster at the-test-cluster has no GPU; set device: cpu"):
            start_backend("the-test-cluster", 2, device="cuda")
        assert ray.available_resources().get("CPU", 0.0) == 2.0  # no worker was started
