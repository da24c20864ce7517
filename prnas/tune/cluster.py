"""Starting or joining a Ray cluster, and refusing trials that could never be placed.

Shared by the search and retrain fan-outs. Failure modes that motivate it: a
trial asking for a GPU on a GPU-less cluster stays PENDING forever instead of
failing, and an unreachable ``--address`` makes Ray retry forever.

Authentication is Ray's own default, never switched off here: Ray (2.59+)
starts a local cluster with token authentication and generates the token
(``~/.ray/auth_token``), because its GCS and raylet listen on every interface
and anyone who can reach them could otherwise run code there. See the README's
section on running on a shared network.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prnas.storage import Location, as_location, location

STORAGE_ENV = "PRNAS_STORAGE"
CONNECT_TIMEOUT_S = 10.0
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class ClusterResourceError(RuntimeError):
    """The cluster cannot run a single trial of the requested shape."""


class ClusterConnectError(ConnectionError):
    """``--address`` names no reachable Ray cluster."""


def check_experiment_name(name: str) -> str:
    """A plain folder name: ``--name ../../x`` or ``/abs`` would write outside --storage."""
    if not _PLAIN_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"--name must be a plain folder name (letters, digits, '.', '_', "
                         f"'-'; no '/' or '..'), got {name!r}")
    return name


def experiment_lock(storage: Location, name: str):
    """The lock that keeps a second driver out of experiment ``name`` while one runs.

    Beside the experiment folder, not in it: Tune creates that folder itself. A folder lock
    is an ``flock``, which holds between drivers of one machine (and of several where the
    shared filesystem supports it); an object store has no lock, so there only the refusal
    to start into an existing experiment guards it (docs/search.md, Running on a cluster).
    """
    from prnas.runtime.lock import FolderLock

    storage = as_location(storage)
    if not storage.is_local:
        return _NoLock()
    return FolderLock(Path(storage.path) / f".{name}.lock", what=f"experiment {storage / name}")


class _NoLock:
    def acquire(self) -> _NoLock:
        return self

    def release(self) -> None:
        pass

    def __enter__(self) -> _NoLock:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def experiment_storage(value: str | None, flag: str = "--storage") -> Location:
    """Where a Tune job's experiments go: ``value`` (a folder or a storage URI), else
    ``$PRNAS_STORAGE``, else ``./runs``. A local folder must be writable; a URI must name
    a filesystem pyarrow knows (StorageError, a ValueError, otherwise)."""
    from prnas._io import check_output_dir

    storage = location(value or os.environ.get(STORAGE_ENV) or "runs")
    if storage.is_local:
        check_output_dir(storage.path, flag)
    return storage


def check_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout`` on a host:port nobody listens on (Ray itself retries forever)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local" or a form Ray resolves itself
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                                      timeout=timeout):
            pass
    except OSError as err:
        raise ClusterConnectError(f"--address {address}: no Ray cluster reachable within "
                                  f"{timeout:g}s ({err.strerror or err})") from None


def init_ray(address: str | None = None, num_cpus: int | None = None,
             dashboard: bool = False, worker_setup: Callable[[], None] | None = None
             ) -> str | None:
    """Start a local Ray (``address=None``) or join one (``"auto"``, ``"ray://host:port"``).

    Returns the dashboard URL when there is one. ``num_cpus`` caps a local
    instance only; a joined cluster brings its own resources. ``worker_setup`` runs
    in every worker process (Ray's ``worker_process_setup_hook``; the entry points
    pass ``ray_compat.quiet_logs``). Idempotent: an already initialised Ray is
    reused as it is.
    """
    import ray

    if not ray.is_initialized():
        kwargs: dict = {"logging_level": logging.WARNING, "configure_logging": True}
        if worker_setup is not None:
            kwargs["runtime_env"] = {"worker_process_setup_hook": worker_setup}
        if address is None:
            kwargs.update(num_cpus=num_cpus, include_dashboard=dashboard)
        else:
            check_address(address)
        try:
            ctx = ray.init(address=address, **kwargs)
        except ConnectionError as err:
            first = (str(err).strip().splitlines() or ["connection failed"])[0]
            raise ClusterConnectError(f"--address {address}: {first}") from None
        url = getattr(ctx, "dashboard_url", None)
    else:
        url = ray.get_dashboard_url() if hasattr(ray, "get_dashboard_url") else None
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def _node_capacities() -> list[dict[str, float]]:
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def _largest(nodes: list[dict[str, float]], resource: str) -> float:
    return max((n.get(resource, 0.0) for n in nodes), default=0.0)


def check_resources(gpus_per_trial: float, cpus_per_trial: float) -> None:
    """Raise :class:`ClusterResourceError` unless one node can host one trial.

    Ray places a trial on a single node, so the largest node decides, not the
    cluster total. Call after :func:`init_ray`, before building the Tuner.
    """
    if gpus_per_trial < 0 or cpus_per_trial < 0:
        raise ValueError(f"resources per trial must be >= 0, got gpus={gpus_per_trial}, "
                         f"cpus={cpus_per_trial}")
    nodes = _node_capacities()
    max_gpus, max_cpus = _largest(nodes, "GPU"), _largest(nodes, "CPU")
    if gpus_per_trial > 0 and max_gpus == 0:
        raise ClusterResourceError(
            f"each trial asks for {gpus_per_trial:g} GPU(s) but the Ray cluster has no GPU; "
            "its trials would wait forever. Run with --gpus-per-trial 0 (CPU), or start/join "
            "a cluster with GPUs (--address)")
    if gpus_per_trial > max_gpus:
        raise ClusterResourceError(
            f"each trial asks for {gpus_per_trial:g} GPU(s) but the largest node has "
            f"{max_gpus:g}; lower --gpus-per-trial")
    if cpus_per_trial > max_cpus:
        raise ClusterResourceError(
            f"each trial asks for {cpus_per_trial:g} CPU(s) but the largest node has "
            f"{max_cpus:g}; lower --cpus-per-trial")


def check_resume(experiment: Location, kind: str, filename: str) -> None:
    """Raise ``ValueError`` (one line) unless the stored experiment can be continued as a
    ``kind`` ("search" or "retrain") experiment whose trials checkpoint ``filename``.

    Tune's ``restore`` of the other job's experiment fails deep inside Tune; a crafted
    or foreign trial checkpoint fails in each trial's actor, with Ray's tracebacks, a
    retry and exit 1. Both are found here first, from the files alone, before Ray
    starts (``weights_only``: nothing in a checkpoint runs).
    """
    from prnas.runtime import checkpoint
    from prnas.tune.ray_compat import trainable_names

    other = {"search": ("RetrainTrainable", "retrain", "run_retrain.py"),
             "retrain": ("SearchTrainable", "search", "run_search.py")}[kind]
    if other[0] in trainable_names(experiment):
        raise ValueError(f"--resume: {experiment} is a {other[1]} experiment, not a {kind}; "
                         f"continue it with {other[2]} --resume")
    if not experiment.is_local:  # on an object store each trial finds out for itself
        return
    for trial in sorted(Path(experiment.path).iterdir()):
        ckpts = sorted(trial.glob("checkpoint_*"), reverse=True) if trial.is_dir() else []
        first: checkpoint.CheckpointError | None = None
        for ckpt in ckpts:  # newest first; an incomplete copy leaves the one before it
            try:
                checkpoint.load(ckpt / filename, kind=kind)
                break
            except checkpoint.CheckpointError as err:
                if not err.incomplete:
                    raise ValueError(f"--resume: {err}") from None
                first = first or err
        else:
            if first is not None:
                raise ValueError(f"--resume: {first}")


def check_workers(workers: int, cpus_per_worker: float, use_gpu: bool) -> None:
    """Raise :class:`ClusterResourceError` unless the cluster can place ``workers``
    data-parallel workers at once (Ray Train gangs them: all or none start).

    Ray Train may spread the workers over nodes, so the cluster's totals decide;
    each worker must still fit one node.
    """
    nodes = _node_capacities()
    total_cpus = sum(n.get("CPU", 0.0) for n in nodes)
    total_gpus = sum(n.get("GPU", 0.0) for n in nodes)
    max_cpus = _largest(nodes, "CPU")
    need_cpus = workers * cpus_per_worker
    if cpus_per_worker > max_cpus or need_cpus > total_cpus:
        raise ClusterResourceError(
            f"--workers-per-trial {workers} needs {need_cpus:g} CPU(s) ({cpus_per_worker:g} a "
            f"worker) but the Ray cluster has {total_cpus:g} (largest node {max_cpus:g}); "
            "lower --workers-per-trial, or start Ray with more CPUs (--num-cpus, --address)")
    if use_gpu and workers > total_gpus:
        raise ClusterResourceError(
            f"--workers-per-trial {workers} needs {workers} GPU(s) (one a worker) but the Ray "
            f"cluster has {total_gpus:g}; lower --workers-per-trial")


def cluster_gpus() -> float:
    """GPUs of the largest node (0 on a CPU-only cluster); picks the default per-trial GPU."""
    return _largest(_node_capacities(), "GPU")


def start_driver(address: str | None, num_cpus: int | None, dashboard: bool, *,
                 verbosity: int, quiet_driver: bool) -> str | None:
    """Both Tune jobs' Ray start-up: the driver's environment and, unless ``verbosity`` is
    2, quiet Ray loggers in the workers (and in the driver when ``quiet_driver``); then
    :func:`init_ray`. Kept out of library code paths: only the entry points call it."""
    from prnas.tune import ray_compat

    for key, value in ray_compat.DRIVER_ENV.items():
        os.environ.setdefault(key, value)
    if quiet_driver:
        ray_compat.quiet_logs()
    return init_ray(address, num_cpus, dashboard,
                    worker_setup=None if verbosity >= 2 else ray_compat.quiet_logs)


@contextlib.contextmanager
def data_on_this_node() -> Iterator[None]:
    """Name the node when a trial finds no data: on a cluster every trial reads the data
    folder on its own node, so a folder that exists only on the driver fails there (the
    driver checked its own copy before starting). A FileNotFoundError (e.g.
    ``DatasetNotFoundError``) is raised again, same type, with the node and the remedy."""
    try:
        yield
    except FileNotFoundError as err:
        from prnas.tune import ray_compat

        node_id = ray_compat.node_id()
        node = socket.gethostname() + (f" ({node_id})" if node_id else "")
        raise type(err)(
            f"{err} [on node {node}: on a cluster "
            "every node reads the data from the same path; put it on storage all nodes "
            "mount, or copy it to that path on each node]") from err


def resource_request(config: dict[str, Any]) -> Any:
    """The one way both Tune jobs ask for resources: ``config["resources"]`` (``cpu``,
    ``gpu``), read by each Trainable's ``default_resource_request``. Kept in the trial's
    config, a trial restored by ``--resume`` asks for what it first asked for."""
    from ray import tune

    res = config.get("resources") or {}
    return tune.PlacementGroupFactory(
        [{"CPU": float(res.get("cpu", 1)), "GPU": float(res.get("gpu", 0))}])


def trial_gpu_fraction(trainable: Any) -> float:
    """The GPUs a running Trainable reserved (0 outside Tune or on a CPU trial)."""
    res = getattr(trainable, "trial_resources", None)
    try:
        return float(res.required_resources.get("GPU", 0.0)) if res is not None else 0.0
    except AttributeError:
        return 0.0


def claim_gpu_share(fraction: float) -> int | None:
    """Keep a trial on a shared GPU to its reserved share; the byte budget, or None.

    With ``--gpus-per-trial 0.5`` two trials share a card, but the adaptive batch
    size would otherwise grow into all the memory it sees free, and the caching
    allocator keeps what it took: the neighbour then fails at b_min. Capping the
    allocator at the share makes an overrun a catchable out-of-memory (backed off
    from), and the returned budget makes the controller aim below it.
    """
    if not 0.0 < fraction < 1.0:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    device = torch.cuda.current_device()  # Ray sets CUDA_VISIBLE_DEVICES per trial
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return int(torch.cuda.get_device_properties(device).total_memory * fraction)
