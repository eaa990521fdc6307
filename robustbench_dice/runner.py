"""Run a suite against a result store: skip what is stored, retry failures, run the rest in processes.

Each run is independent: a worker process runs one Scenario and writes its
record itself (atomically), so killing the runner loses only the runs in
flight, and a failing run never stops the others.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from .scenario import Scenario
from .store import ResultStore, scenario_key
from .suite import Suite

RUN_THREADS = 1


@dataclass
class SuiteProgress:
    total: int
    stored: int = 0  # already in the store before this run
    done: int = 0  # computed now (ok)
    skipped: int = 0  # declined by a plugin (with a reason)
    failed: int = 0

    def line(self) -> str:
        return f"done {self.done}, stored {self.stored}, skipped {self.skipped}, failed {self.failed} of {self.total}"


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_cell(scenario_data: dict[str, object], store_root: str, plugin_folders: tuple[str, ...], threads: int) -> str:
    """Worker entry point: run one scenario and store its record; returns the status."""
    import torch

    from .engine import simulate
    from .registry import load_builtin_plugins, load_plugin_folder

    torch.set_num_threads(threads)
    load_builtin_plugins()
    for folder in plugin_folders:
        load_plugin_folder(folder)
    scenario = Scenario.from_dict(scenario_data)
    store = ResultStore(store_root)
    log = Path(store_root) / "logs" / f"{scenario_key(scenario)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        result = simulate(scenario)
        store.put_result(scenario, result)
    except Exception as exc:  # noqa: BLE001 - a failing run is recorded, never raised into the suite
        text = traceback.format_exc()
        store.put_failure(scenario, f"{type(exc).__name__}: {exc}", text)
        log.write_text(f"{scenario.to_dict()}\nFAILED after {time.perf_counter() - start:.1f}s\n{text}")
        return "failed"
    summary = (
        f"status {result.status}"
        + (f": {result.reason}" if result.reason else "")
        + (f"; accuracy {result.final_accuracy_mean:.4f}, edge AUC {result.edge_auc}" if result.status == "ok" else "")
    )
    log.write_text(f"{scenario.to_dict()}\n{summary}\nin {time.perf_counter() - start:.1f}s\n")
    return result.status


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


def run_suite(
    suite: Suite,
    store: ResultStore,
    *,
    jobs: int | None = None,
    force: bool = False,
    plugin_folders: tuple[str, ...] = (),
    show_progress: bool = True,
) -> SuiteProgress:
    """Run every pending cell of ``suite`` with ``jobs`` local processes (1: in this process)."""
    jobs = jobs or default_jobs()
    todo, stored = pending(suite, store, force)
    progress = SuiteProgress(total=len(todo) + stored, stored=stored)
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(
            total=progress.total,
            initial=stored,
            unit="run",
            desc=suite.name,
            file=sys.stderr,
            disable=None,
            dynamic_ncols=True,
        )

    def account(status: str) -> None:
        if status == "ok":
            progress.done += 1
        elif status == "skipped":
            progress.skipped += 1
        else:
            progress.failed += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(progress.line(), refresh=False)

    # one thread per run, whatever --jobs is: matmul rounding depends on the thread count, and a stored number must
    # not depend on how many runs were in flight (suites parallelise across runs instead)
    args = [(s.to_dict(), str(store.root), tuple(plugin_folders), RUN_THREADS) for s in todo]
    if jobs == 1:
        import torch

        previous = torch.get_num_threads()
        try:
            for a in args:
                account(run_cell(*a))
        finally:
            torch.set_num_threads(previous)
    else:
        context = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(run_cell, *a): scenario for a, scenario in zip(args, todo, strict=True)}
            for future in cf.as_completed(futures):
                try:
                    account(future.result())
                except Exception as exc:  # noqa: BLE001 - the worker died: record it, the next run retries it
                    text = "".join(traceback.format_exception(exc))
                    store.put_failure(futures[future], f"worker process failed: {type(exc).__name__}: {exc}", text)
                    account("failed")
    if bar is not None:
        bar.close()
    return progress
