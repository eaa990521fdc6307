"""Run a suite against a result store: skip what is stored, retry failures, run the rest on an executor.

Each run is independent: a worker (a local process, a Dask worker, a SLURM
job) runs one Scenario and writes its record itself (atomically), so killing
the runner loses only the runs in flight, and a failing run never stops the
others.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .executors import ExecutorConfig, default_jobs, execute
from .scenario import Scenario
from .store import ResultStore, failure_record, result_record
from .suite import Suite

RUN_THREADS = 1


@dataclass
class SuiteProgress:
    total: int
    stored: int = 0  # already in the store before this run
    done: int = 0  # computed now (ok)
    skipped: int = 0  # declined by a plugin (with a reason)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (record key, error) of each failed run

    @property
    def failed(self) -> int:
        return len(self.failures)

    def line(self) -> str:
        return (
            f"computed {self.done}, already stored {self.stored}, skipped {self.skipped}, failed {self.failed}"
            f" of {self.total}"
        )


LOG_INTERVAL_S = 60.0  # progress lines, when stderr is no terminal, at most this often


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class ProgressLog:
    """Progress as plain lines on a stream that is no terminal (a log file, a batch job's output), where a bar would
    show nothing until the end: at most one line every ``interval_s`` seconds, with the time left at this run's rate."""

    def __init__(self, name: str, progress: SuiteProgress, interval_s: float) -> None:
        self.name, self.progress, self.interval_s = name, progress, interval_s
        self.start = self.last = time.monotonic()

    def update(self) -> None:
        now = time.monotonic()
        p = self.progress
        finished = p.done + p.skipped + p.failed
        if now - self.last < self.interval_s or p.stored + finished >= p.total:  # the runner sums up the end itself
            return
        self.last = now
        left = (p.total - p.stored - finished) * (now - self.start) / finished
        print(
            f"{self.name}: {p.stored + finished}/{p.total} runs ({100 * (p.stored + finished) // max(p.total, 1)}%);"
            f" {p.line()}; {_duration(now - self.start)} elapsed, about {_duration(left)} left",
            file=sys.stderr,
            flush=True,
        )


def run_cell(
    scenario_data: dict[str, object], store_root: str, plugin_folders: tuple[str, ...], threads: int
) -> dict[str, Any]:
    """Worker entry point: run one scenario, store its record when the store is reachable, return the record.

    The record is returned too so that a runner whose workers do not share its filesystem (a remote Dask
    worker, a SLURM node) can still store it; a failing run is a ``failed`` record, never an exception.
    """
    import torch

    from .engine import simulate
    from .registry import load_builtin_plugins, load_plugin_folder

    torch.set_num_threads(threads)
    load_builtin_plugins()
    for folder in plugin_folders:
        load_plugin_folder(folder)
    scenario = Scenario.from_dict(scenario_data)
    try:
        store: ResultStore | None = ResultStore(store_root)
    except ConfigError:
        store = None  # not writable from this machine: the runner stores the returned record
    start = time.perf_counter()
    try:
        result = simulate(scenario)
    except Exception as exc:  # noqa: BLE001 - a failing run is recorded, never raised into the suite
        text = traceback.format_exc()
        record = failure_record(scenario, f"{type(exc).__name__}: {exc}", text)
        summary = f"FAILED after {time.perf_counter() - start:.1f}s\n{text}"
    else:
        record = result_record(scenario, result)
        summary = (
            f"status {result.status}"
            + (f": {result.reason}" if result.reason else "")
            + (
                f"; accuracy {result.final_accuracy_mean:.4f}, edge AUC {result.edge_auc}"
                if result.status == "ok"
                else ""
            )
            + f"\nin {time.perf_counter() - start:.1f}s\n"
        )
    if store is not None:
        store.put_record(record)
        log = store.root / "logs" / f"{record['key']}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"{scenario.to_dict()}\n{summary}")
    return record


def pending(suite: Suite, store: ResultStore, force: bool) -> tuple[list[Scenario], int]:
    """Cells to run (absent, failed or corrupted; all with ``force``) and how many are stored."""
    todo, stored = [], 0
    for scenario in suite.scenarios():
        record = None if force else store.get(scenario)
        if record is None or record.status == "failed":
            todo.append(scenario)
        else:
            stored += 1
    return todo, stored


def check_devices_here(suite: Suite, todo: list[Scenario]) -> None:
    """A ConfigError before anything runs where runs to compute on this machine ask for CUDA and torch sees no CUDA
    device: each would fail with the same error. (Dask and SLURM workers may have the GPU the submitting machine
    lacks, so only local runs are checked.)"""
    import torch

    wanting = sum(s.device == "cuda" for s in todo)
    if wanting and not torch.cuda.is_available():
        raise ConfigError(
            f"{wanting} run(s) of suite {suite.name!r} ask for device 'cuda', and torch sees no CUDA device on this"
            " machine: run the suite where there is one (or with --executor dask / slurm on GPU workers), or set"
            " device = 'cpu' or 'auto' in its [suite.base]"
        )


def check_data_here(suite: Suite, todo: list[Scenario]) -> None:
    """Before anything runs, what would make runs to compute on this machine fail whatever their seed: a dataset
    that does not load here (DatasetNotFoundError), a model that cannot take a dataset's inputs or a training pool
    too small for the nodes (ConfigError; :func:`.setup.check_fits`). Each distinct dataset is loaded once. A suite
    crosses every model with every dataset, so a pair that cannot run (the CNN on MNIST-1D's vectors) failed once
    per cell before, found only after the suite ran. Local runs only, as devices are: data may lie elsewhere on
    Dask or SLURM workers."""
    from .datasets import load_dataset
    from .errors import DatasetNotFoundError
    from .setup import FIT_FIELDS, check_fits

    by_data: dict[tuple[Any, ...], dict[tuple[Any, ...], list[Scenario]]] = {}
    for s in todo:
        data = (s.dataset, s.data_root, s.mnist1d_samples)
        by_data.setdefault(data, {}).setdefault(tuple(getattr(s, f) for f in FIT_FIELDS), []).append(s)
    for (name, data_root, mnist1d_samples), groups in by_data.items():
        try:
            dataset = load_dataset(name, data_root, mnist1d_samples=mnist1d_samples)
        except (ConfigError, DatasetNotFoundError) as exc:
            count = sum(len(cells) for cells in groups.values())
            raise type(exc)(f"{count} run(s) of suite {suite.name!r} use dataset {name!r}: {exc}") from None
        for cells in groups.values():
            try:
                check_fits(cells[0], dataset)
            except ConfigError as exc:
                first = cells[0]
                raise ConfigError(
                    f"{len(cells)} run(s) of suite {suite.name!r} (dataset {name}, model {first.model},"
                    f" {first.nodes} nodes, partition {first.partition}) would each fail: {exc}"
                ) from None


def check_local_runs(suite: Suite, todo: list[Scenario]) -> None:
    """What ``run`` stops on, before running anything, where ``todo`` runs on this machine (the local executor):
    :func:`check_devices_here`, then :func:`check_data_here`. ``run --dry-run`` says the same."""
    check_devices_here(suite, todo)
    check_data_here(suite, todo)


def run_suite(
    suite: Suite,
    store: ResultStore,
    *,
    jobs: int | None = None,
    executor: ExecutorConfig | None = None,
    force: bool = False,
    plugin_folders: tuple[str, ...] = (),
    show_progress: bool = True,
) -> SuiteProgress:
    """Run every pending cell of ``suite`` on ``executor`` (default: ``jobs`` local processes; 1 = in this process)."""
    config = executor or ExecutorConfig(kind="local", jobs=jobs)
    todo, stored = pending(suite, store, force)
    if config.kind == "local":
        check_local_runs(suite, todo)
    progress = SuiteProgress(total=len(todo) + stored, stored=stored)
    bar = log = None
    if show_progress and not sys.stderr.isatty():
        log = ProgressLog(suite.name, progress, LOG_INTERVAL_S)
    elif show_progress:
        from tqdm import tqdm

        bar = tqdm(
            total=progress.total,
            initial=stored,
            unit="run",
            desc=suite.name,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    # one thread per run, whatever --jobs is: matmul rounding depends on the thread count, and a stored number must
    # not depend on how many runs were in flight (suites parallelise across runs instead)
    tasks = [(s.to_dict(), str(store.root), tuple(plugin_folders), RUN_THREADS) for s in todo]
    previous_threads = torch_threads()
    try:
        for index, record, error in execute(config, run_cell, tasks, str(store.root)):
            scenario = todo[index]
            if record is None:
                text = "".join(traceback.format_exception(error)) if error is not None else "no record returned"
                record = store.put_failure(scenario, f"worker failed: {type(error).__name__}: {error}", text).data
            else:
                existing = store.get(scenario)
                if existing is None or existing.data != json.loads(json.dumps(record)):  # worker could not write here
                    store.put_record(record)
            status = str(record["status"])
            if status == "ok":
                progress.done += 1
            elif status == "skipped":
                progress.skipped += 1
            else:
                progress.failures.append((str(record["key"]), str(record.get("error", "no error recorded"))))
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(progress.line(), refresh=False)
            if log is not None:
                log.update()
    finally:
        torch_threads(previous_threads)
        if bar is not None:
            bar.close()
    return progress


def torch_threads(count: int | None = None) -> int:
    """Torch's intra-op thread count, set to ``count`` when given (in-process runs change it)."""
    import torch

    if count is not None:
        torch.set_num_threads(count)
    return torch.get_num_threads()


__all__ = ["SuiteProgress", "default_jobs", "pending", "run_cell", "run_suite"]
