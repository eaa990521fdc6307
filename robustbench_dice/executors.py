"""Where suite runs execute: local processes, a Dask distributed cluster, or SLURM through submitit.

Every executor calls the same worker function (``runner.run_cell``) on the
same arguments and yields ``(task index, record or None, error or None)`` as
runs finish, in completion order. Records are plain JSON-able dicts. Dask and
submitit move the function's arguments and return values between machines
with their own serialisation; nothing read from the user or the store is
ever unpickled by this package.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import importlib.util
import multiprocessing
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

EXECUTORS = ("local", "dask", "slurm")
Task = tuple[Any, ...]
Outcome = tuple[int, dict[str, Any] | None, BaseException | None]


@dataclass(frozen=True)
class ExecutorConfig:
    """How and where the runs of a suite execute."""

    kind: str = field(default="local", metadata={"help": "local | dask | slurm"})
    jobs: int | None = field(default=None, metadata={"help": "local worker processes (default: the cores available)"})
    address: str | None = field(default=None, metadata={"help": "Dask scheduler address, e.g. tcp://host:8786"})
    connect_timeout_s: float = field(default=10.0, metadata={"help": "seconds to wait for the Dask scheduler"})
    slurm_partition: str | None = field(default=None, metadata={"help": "SLURM partition (default: the cluster's)"})
    slurm_time_min: int = field(default=60, metadata={"help": "time limit of one SLURM job, minutes"})
    slurm_mem_gb: float = field(default=4.0, metadata={"help": "memory of one SLURM job, GiB"})
    slurm_cpus: int = field(default=1, metadata={"help": "CPUs per SLURM job"})
    slurm_parallel: int = field(default=64, metadata={"help": "most SLURM array jobs running at once"})
    runs_per_job: int = field(default=8, metadata={"help": "suite runs packed into one SLURM job"})
    slurm_folder: str | None = field(default=None, metadata={"help": "submitit's job folder (default: STORE/submitit)"})
    slurm_cluster: str = field(
        default="slurm", metadata={"help": "'slurm', or 'local' to run the same submitit jobs on this machine"}
    )

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ConfigError(f"unknown executor {self.kind!r}; choose one of {', '.join(EXECUTORS)}")
        if self.jobs is not None and self.jobs < 1:
            raise ConfigError(f"jobs must be >= 1, got {self.jobs}")
        if self.kind == "dask" and not self.address:
            raise ConfigError("--executor dask needs --address (the scheduler's, e.g. tcp://10.0.0.5:8786)")
        if self.kind != "dask" and self.address:
            raise ConfigError(f"--address is for --executor dask, not {self.kind!r}")
        if self.slurm_cluster not in ("slurm", "local"):
            raise ConfigError(f"slurm_cluster must be 'slurm' or 'local', got {self.slurm_cluster!r}")
        for name in ("slurm_time_min", "slurm_cpus", "slurm_parallel", "runs_per_job"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.slurm_mem_gb <= 0 or self.connect_timeout_s <= 0:
            raise ConfigError("slurm_mem_gb and connect_timeout_s must be > 0")

    def check_available(self) -> None:
        """Raise a ConfigError now if this machine cannot use the executor (a missing package or ``sbatch``)."""
        if self.kind == "slurm":
            if importlib.util.find_spec("submitit") is None:
                raise ConfigError("--executor slurm needs submitit: pip install 'robustbench-dice[cluster]'")
            if self.slurm_cluster == "slurm" and shutil.which("sbatch") is None:
                raise ConfigError(
                    "--executor slurm needs `sbatch` on PATH: run from a SLURM login node "
                    "(--slurm-cluster local runs the same submitit jobs on this machine)"
                )
        if self.kind == "dask" and importlib.util.find_spec("distributed") is None:
            raise ConfigError("--executor dask needs dask.distributed: pip install 'robustbench-dice[cluster]'")


def execute(
    config: ExecutorConfig, worker: Callable[..., dict[str, Any]], tasks: Sequence[Task], store_root: str
) -> Iterator[Outcome]:
    """Run ``worker(*task)`` for every task on the configured executor; yield outcomes as they finish."""
    if not tasks:
        return iter(())
    if config.kind == "dask":
        return _dask(worker, tasks, config)
    if config.kind == "slurm":
        return _submitit(worker, tasks, config, config.slurm_folder or os.path.join(store_root, "submitit"))
    return _local(worker, tasks, config.jobs or default_jobs())


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _local(worker: Callable[..., dict[str, Any]], tasks: Sequence[Task], jobs: int) -> Iterator[Outcome]:
    if jobs == 1:
        for index, task in enumerate(tasks):
            yield index, worker(*task), None
        return
    # spawn, not fork: a forked child inherits torch's thread pools and any open handles of the parent
    context = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context)
    finished = False
    try:
        futures = {pool.submit(worker, *task): index for index, task in enumerate(tasks)}
        for future in cf.as_completed(futures):
            try:
                yield futures[future], future.result(), None
            except Exception as exc:  # noqa: BLE001 - the worker process died; the runner records it
                yield futures[future], None, exc
        finished = True
    finally:
        if not finished:
            # Ctrl-C, or the caller stopped early: a plain `with` block would first finish every queued run (minutes
            # of silent work), and a worker blocked on sending a large record to a loop that no longer reads would
            # hang the shutdown for good. So drop the runs not started and stop those in flight (their records,
            # written atomically, are either whole or absent).
            in_flight = list((pool._processes or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in in_flight:
                process.terminate()
        pool.shutdown(wait=True)


def _dask(worker: Callable[..., dict[str, Any]], tasks: Sequence[Task], config: ExecutorConfig) -> Iterator[Outcome]:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise ConfigError("--executor dask needs dask.distributed: pip install 'robustbench-dice[cluster]'") from exc
    try:
        client = Client(config.address, timeout=config.connect_timeout_s, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(
            f"could not reach the Dask scheduler at {config.address!r} within {config.connect_timeout_s:g}s "
            f"({type(exc).__name__}: {exc}); start one with `dask scheduler` and workers with "
            "`dask worker ADDRESS` (robustbench-dice installed on each), or check the address"
        ) from exc
    batch = uuid.uuid4().hex[:8]
    with client:
        futures = [
            client.submit(worker, *task, key=f"robustbench-dice-{batch}-{index}", pure=False)
            for index, task in enumerate(tasks)
        ]
        positions = {future.key: index for index, future in enumerate(futures)}
        # our client is not the process-wide default (we leave no global state), so name its loop
        for future in as_completed(futures, loop=client.loop):
            try:
                yield positions[future.key], future.result(), None
            except Exception as exc:  # noqa: BLE001 - a worker died or the task raised: recorded as a failure
                yield positions[future.key], None, exc


def run_chunk(worker: Callable[..., dict[str, Any]], chunk: Sequence[Task]) -> list[dict[str, Any]]:
    """One SLURM job: several suite runs in sequence (a job per short run would drown the scheduler)."""
    return [worker(*task) for task in chunk]


def _submitit(
    worker: Callable[..., dict[str, Any]], tasks: Sequence[Task], config: ExecutorConfig, folder: str
) -> Iterator[Outcome]:
    config.check_available()
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=config.slurm_cluster)
    parameters: dict[str, Any] = {
        "name": "robustbench-dice",
        "timeout_min": config.slurm_time_min,
        "cpus_per_task": config.slurm_cpus,
    }
    if config.slurm_cluster == "slurm":
        parameters.update(mem_gb=config.slurm_mem_gb, slurm_array_parallelism=config.slurm_parallel)
        if config.slurm_partition:
            parameters["slurm_partition"] = config.slurm_partition
    executor.update_parameters(**parameters)
    size = config.runs_per_job
    starts = list(range(0, len(tasks), size))
    chunks = [list(tasks[s : s + size]) for s in starts]
    local = config.slurm_cluster == "local"
    # submitit's local cluster starts a controller process per job, writing to the stderr it inherits; cancelling a
    # job (Ctrl-C) interrupts it and it prints a traceback there: send that to a file in the folder instead
    controllers_log = os.path.join(folder, LOCAL_CONTROLLERS_LOG)
    with _stderr_to(controllers_log) if local else contextlib.nullcontext():
        jobs = executor.map_array(run_chunk, [worker] * len(chunks), chunks)
    first_index = {job.job_id: start for job, start in zip(jobs, starts, strict=True)}
    poll_s = 1.0 if config.slurm_cluster == "local" else 10.0
    failed, finished = False, False
    try:
        for job in submitit.helpers.as_completed(jobs, poll_frequency=poll_s):
            start = first_index[job.job_id]
            count = min(size, len(tasks) - start)
            try:
                records = job.result()
            except Exception as exc:  # noqa: BLE001 - a job failed or timed out: its runs are recorded as failures
                failed = True  # its files stay in the folder, for its logs
                for index in range(start, start + count):
                    yield index, None, exc
                continue
            _remove_job_files(job.paths)
            for offset, record in enumerate(records):
                yield start + offset, record, None
        finished = True
    finally:
        if not finished:  # Ctrl-C or the caller stopped early: as with local processes, stop the suite's jobs
            for job in jobs:
                if not job.done():
                    job.cancel(check=False)
    if not failed:
        _remove_job_files(*{job.paths.submission_file: job.paths for job in jobs}.values(), submission=True)
        if finished and local and os.path.isfile(controllers_log) and not os.path.getsize(controllers_log):
            os.remove(controllers_log)
        if os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)


LOCAL_CONTROLLERS_LOG = "local-controllers.log"


@contextlib.contextmanager
def _stderr_to(path: str) -> Iterator[None]:
    """Processes started in the block inherit ``path`` (appended to) as their stderr instead of this process's."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _remove_job_files(*paths: Any, submission: bool = False) -> None:
    """Delete submitit's files of finished jobs (``JobPaths``): its pickles and logs, and with ``submission``
    the array's submission script. Each run's own log is already in the store."""
    for job_paths in paths:
        names = ["submission_file"] if submission else ["submitted_pickle", "result_pickle", "stdout", "stderr"]
        for name in names:
            getattr(job_paths, name).unlink(missing_ok=True)
