"""Suite-wide settings.

The fast lane, ``pytest -m "not slow"``: every test marked ``slow`` (over about 2 s
on the 2-core machine) is left out, and so is every test that starts Ray (marked
``ray`` or ``cluster``), which this file marks ``slow`` as well.

Every test network is tiny: on a 2-core machine more torch threads only add
spin-waiting (a transfer test went from 1 s to 77 s with 2 threads under load).
One thread for this process, and for the subprocesses the tests start, whose
thread count ``prnas.runtime.device.configure_threads`` reads from the env.
"""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    before, env = torch.get_num_threads(), os.environ.get("PRNAS_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["PRNAS_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("PRNAS_NUM_THREADS", None)
    else:
        os.environ["PRNAS_NUM_THREADS"] = env


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("ray") or item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def ray_cpu():
    """A local Ray of 2 CPUs for one test module (the Tune search tests)."""
    import ray

    from prnas.tune.cluster import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """One experiment storage folder per test module."""
    return tmp_path_factory.mktemp("runs")
