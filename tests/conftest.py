"""Suite-wide settings.

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
