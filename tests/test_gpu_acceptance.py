"""The GPU acceptance script: its CPU smoke run, and what it needs on an air-gapped node.

No timing is asserted (the figures come from a GPU run, benchmarks/README.md); the
smoke run keeps every check's code path working, and the import test keeps the
list of wheels a GPU node must be given short and true.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

# Import names of what an air-gapped node with a vendor PyTorch image has (issue 18): torch,
# torchvision, numpy, pandas, pyarrow, matplotlib, scikit-learn, pyyaml, tqdm, nvidia-ml-py,
# and what those bring along (Pillow with torchvision, scipy with scikit-learn, cloudpickle,
# which pyarrow imports where it is installed, as it is on the node).
NODE = {"torch", "torchvision", "numpy", "pandas", "pyarrow", "matplotlib", "sklearn", "scipy",
        "joblib", "threadpoolctl", "yaml", "tqdm", "pynvml", "PIL", "cloudpickle"}
OWN = {"prnas", "common", "search_step", "retrain_step", "gpu_acceptance"}

_PROBE = r"""
import json, sys
import torch, torchvision  # the node's own; whatever they import is there too
base = {m.split(".")[0] for m in sys.modules}
sys.path.insert(0, sys.argv[1])
import prnas.search.engine, prnas.search.__main__, prnas.retrain, prnas.retrain.__main__
import prnas.runtime.checkpoint, prnas.runtime.batch_size, prnas.runtime.memory
import prnas.data.device_resident, prnas.data.loading
import gpu_acceptance
mods = {m.split(".")[0] for m in sys.modules}
print(json.dumps({"new": sorted(mods - base), "all": sorted(mods),
                  "extra": list(gpu_acceptance.EXTRA_PACKAGES)}))
"""


@pytest.mark.slow
def test_in_process_engine_needs_only_the_documented_wheels():
    out = subprocess.run([sys.executable, "-c", _PROBE, str(BENCH)], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    got = json.loads(out.strip().splitlines()[-1])
    extra = {name.replace("-", "_") for name in got["extra"]}
    allowed = set(sys.stdlib_module_names) | NODE | OWN | extra | {"__mp_main__"}
    assert "ray" not in got["all"]
    # _cython_*: the shared helper module that Cython-built extensions (PyYAML's) register.
    new = {m for m in got["new"] if not m.startswith("_cython_")}
    assert new - allowed == set()
    # Each listed wheel is really needed (imported), so the list stays short.
    assert extra - {"typing_extensions"} <= set(got["new"])
    readme = (BENCH / "README.md").read_text()
    assert all(name in readme for name in got["extra"])


@pytest.mark.slow
def test_smoke_run_passes_every_check_on_cpu(capsys):
    import gpu_acceptance

    assert gpu_acceptance.main(["--smoke", "--threads", "1"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    checks = {r["check"]: r for r in lines}
    assert sorted(checks) == list(range(9))  # the machine, then checks 1-8
    assert checks[0]["device"] == "cpu" and checks[0]["smoke"] is True
    assert all(checks[k]["status"] in ("pass", "not met", "skip", "info") for k in range(1, 9))
    assert checks[4]["status"] == "skip"  # the allocator cap needs CUDA
    steps = checks[1]["rows"]
    assert {r["variant"] for r in steps} == {"reference", "fast", "fused", "fast+bf16"}
    assert all(r["images_per_s"] > 0 for r in steps)
    # The forced out-of-memory backs off and no optimiser steps twice for one batch.
    oom = checks[3]
    assert oom["oom_backoff_ok"] and oom["forced_oom_backoffs"] >= 1
    assert oom["weight_steps_after_oom"] == oom["alpha_steps_after_oom"] == oom["steps_after_oom"]
    assert oom["batch_after_oom"] < oom["final_batch"]
    # On a CPU the stopped-and-resumed search gives the uninterrupted one's genotype.
    assert checks[5]["genotype_written"] and checks[5]["identical"]
    assert checks[5]["pools_after_cycle"] == [6, 3, 1]
    assert len(checks[6]["rows"]) == 6
    assert all(r["device_resident_images_per_s"] > 0 for r in checks[7]["rows"])
    assert checks[8]["search_gpu_hours"] > 0 and checks[8]["retrain_gpu_hours_nchw"] > 0


def test_time_limit_interrupts_a_long_call_and_then_disarms():
    import gpu_acceptance

    with pytest.raises(TimeoutError), gpu_acceptance.time_limit(0.05):
        time.sleep(2)
    with gpu_acceptance.time_limit(5):
        time.sleep(0.01)  # finishes in time; the timer is disarmed on exit
    time.sleep(0.1)
