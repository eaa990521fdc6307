"""Dask and submitit executors give the same records as running in this process; their faults are clear errors."""

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

import robustbench_dice.runner as runner
from robustbench_dice.cli import main
from robustbench_dice.errors import ConfigError
from robustbench_dice.executors import ExecutorConfig, execute
from robustbench_dice.runner import run_suite
from robustbench_dice.store import ResultStore
from robustbench_dice.suite import load_suite

SMALL = """
[suite]
topologies = ["ring", "complete"]
attacks = ["none", "label_flip"]
defenses = ["gossip", "krum", "dice_prune"]
nodes = [6]
byzantine = [1]
seeds = [0]
[suite.base]
rounds = 6
eval_every = 3
batch_size = 8
"""


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return load_suite(str(path))


@pytest.fixture
def reference_store(small, tmp_path):
    store = ResultStore(tmp_path / "in-process")
    progress = run_suite(small, store, jobs=1, show_progress=False)
    assert progress.done == 10 and progress.skipped == 2  # krum declines the ring
    return store


def _without_timings(data):
    data = json.loads(json.dumps(data))
    if "result" in data:
        data["result"] = {k: v for k, v in data["result"].items() if k not in ("timings", "versions")}
    return data


def assert_same_records(expected: ResultStore, actual: ResultStore):
    mine = {r.key: _without_timings(r.data) for r in expected.records()}
    theirs = {r.key: _without_timings(r.data) for r in actual.records()}
    assert set(mine) == set(theirs)
    failures = [r["error"] for r in theirs.values() if r["status"] == "failed"]
    assert not failures, failures
    for key, record in mine.items():
        assert theirs[key] == record, key


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dask_local_cluster_gives_the_same_records(small, reference_store, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        store = ResultStore(tmp_path / "dask")
        config = ExecutorConfig(kind="dask", address=cluster.scheduler_address)
        progress = run_suite(small, store, executor=config, show_progress=False)
    assert (progress.done, progress.skipped, progress.failed) == (10, 2, 0)
    assert_same_records(reference_store, store)
    assert len(list((store.root / "logs").glob("*.log"))) == 12


def test_submitit_local_executor_gives_the_same_records(small, reference_store, tmp_path):
    pytest.importorskip("submitit")
    store = ResultStore(tmp_path / "submitit")
    config = ExecutorConfig(kind="slurm", slurm_cluster="local", runs_per_job=5, slurm_time_min=10)
    progress = run_suite(small, store, executor=config, show_progress=False)
    assert (progress.done, progress.skipped, progress.failed) == (10, 2, 0)
    assert_same_records(reference_store, store)
    assert not (store.root / "submitit").exists()  # submitit's job files are deleted once their records are in
    again = run_suite(small, store, executor=config, show_progress=False)
    assert again.stored == 12 and again.done == 0  # resume works the same on every executor


def test_submitit_keeps_the_files_of_a_failed_job_only(tmp_path):
    pytest.importorskip("submitit")
    import operator

    config = ExecutorConfig(kind="slurm", slurm_cluster="local", runs_per_job=1, slurm_time_min=10)
    outcomes = sorted(execute(config, operator.truediv, [(6, 3), (1, 0)], str(tmp_path)), key=lambda o: o[0])
    assert outcomes[0] == (0, 2.0, None)
    assert outcomes[1][1] is None and "ZeroDivisionError" in str(outcomes[1][2])
    left = sorted(p.name for p in (tmp_path / "submitit").iterdir())
    assert any(name.endswith("_log.err") for name in left)  # the failed job's logs, to read what went wrong
    assert len([name for name in left if name.endswith("_result.pkl")]) == 1  # the finished job's are gone


def test_submitit_jobs_are_cancelled_when_the_suite_stops_early(tmp_path, capfd):
    pytest.importorskip("submitit")
    if not Path("/proc/self/stat").is_file():
        pytest.skip("reads process states from /proc")
    import os
    import signal
    import time

    def alive(pid: int) -> bool:  # a killed job not yet reaped is a zombie ('Z'): not alive
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state != "Z"

    config = ExecutorConfig(kind="slurm", slurm_cluster="local", runs_per_job=1, slurm_time_min=10)
    # submitit's local cluster cancels a job with SIGINT, which its processes would inherit as ignored when pytest
    # itself was started with SIGINT ignored (a background job of a non-interactive shell, as CI may be)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        outcomes = execute(config, time.sleep, [(0.0,), (600.0,), (600.0,)], str(tmp_path))
        assert next(outcomes)[0] == 0
        # a local job's id is the pid of the process that runs it and its task; the slow two are still running
        jobs = [int(p.name.split("_")[0]) for p in (tmp_path / "submitit").glob("*_submitted.pkl")]
        running = [pid for pid in jobs if alive(pid)]
        assert len(running) == 2
        outcomes.close()  # what Ctrl-C in the runner's loop amounts to
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in running) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = [pid for pid in running if alive(pid)]
        for pid in survivors:  # leave nothing behind, even when the check fails
            os.kill(pid, signal.SIGKILL)
        assert not survivors
        # the cancelled controllers' KeyboardInterrupt tracebacks go to a file in the folder, not to the terminal
        assert "Traceback" not in capfd.readouterr().err
        assert "KeyboardInterrupt" in (tmp_path / "submitit" / "local-controllers.log").read_text()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_local_executor_stopped_early_drops_the_runs_not_started(tmp_path):
    # each task sleeps, then leaves a file: the files count the tasks that ran
    tasks = [(["sh", "-c", f"sleep 0.2; touch {tmp_path}/{i}"],) for i in range(30)]
    outcomes = execute(ExecutorConfig(kind="local", jobs=2), subprocess.run, tasks, str(tmp_path))
    next(outcomes)
    outcomes.close()  # what Ctrl-C in the runner's loop amounts to
    ran = len(list(tmp_path.iterdir()))
    assert 1 <= ran <= 8  # the two in flight and the few already handed to workers, not all 30


def test_records_reach_the_store_when_workers_cannot_write_to_it(small, reference_store, tmp_path, monkeypatch):
    """A remote worker without the runner's filesystem returns its record; the runner stores it."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    real_execute = runner.execute

    def elsewhere(config, worker, tasks, store_root):
        moved = [(scenario, str(blocker / "store"), *rest) for scenario, _, *rest in tasks]
        return real_execute(config, worker, moved, store_root)

    monkeypatch.setattr(runner, "execute", elsewhere)
    store = ResultStore(tmp_path / "runner-side")
    progress = run_suite(small, store, jobs=1, show_progress=False)
    assert progress.done == 10 and progress.failed == 0
    assert_same_records(reference_store, store)


def test_a_worker_lost_without_a_record_is_stored_as_a_failure_and_retried(
    small, reference_store, tmp_path, monkeypatch
):
    """A job that died (killed for memory, a node lost) returns no record: the runner stores a failure with the
    executor's error, and the next run computes it."""
    real_execute = runner.execute

    def lost_first(config, worker, tasks, store_root):
        for index, record, error in real_execute(config, worker, tasks, store_root):
            yield (index, None, MemoryError("job killed")) if index == 0 else (index, record, error)

    monkeypatch.setattr(runner, "execute", lost_first)
    store = ResultStore(tmp_path / "store")
    progress = run_suite(small, store, jobs=1, show_progress=False)
    assert progress.failed == 1 and progress.done + progress.skipped == 11
    ((key, error),) = progress.failures
    assert error == "worker failed: MemoryError: job killed"
    assert "MemoryError: job killed" in json.loads(store.path(key).read_text())["traceback"]
    monkeypatch.undo()
    again = run_suite(small, store, jobs=1, show_progress=False)
    assert again.failed == 0 and again.stored == 11 and again.done + again.skipped == 1
    assert_same_records(reference_store, store)


def test_unreachable_dask_address_is_a_clear_error(small, tmp_path, capsys):
    pytest.importorskip("distributed")
    address = f"tcp://127.0.0.1:{_closed_port()}"
    config = ExecutorConfig(kind="dask", address=address, connect_timeout_s=1.5)
    with pytest.raises(ConfigError, match=f"could not reach the Dask scheduler at '{address}' within 1.5s"):
        run_suite(small, ResultStore(tmp_path / "s"), executor=config, show_progress=False)
    suite_file = tmp_path / "small.toml"
    code = main(
        ["run", "--suite", str(suite_file), "--store", str(tmp_path / "s2"), "--tables", str(tmp_path / "t")]
        + ["--executor", "dask", "--address", address, "--connect-timeout", "1", "--quiet"]
    )
    assert code == 2 and "could not reach the Dask scheduler" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"kind": "dask"}, "--executor dask needs --address"),
        ({"kind": "local", "address": "tcp://x:1"}, "--address is for --executor dask"),
        ({"kind": "ray"}, "unknown executor 'ray'; choose one of local, dask, slurm"),
        ({"kind": "slurm", "runs_per_job": 0}, "runs_per_job must be >= 1, got 0"),
        ({"kind": "local", "jobs": 0}, "jobs must be >= 1, got 0"),
        ({"kind": "slurm", "slurm_cluster": "pbs"}, "slurm_cluster must be 'slurm' or 'local', got 'pbs'"),
    ],
)
def test_bad_executor_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ExecutorConfig(**kwargs)


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="this machine has SLURM")
def test_slurm_without_sbatch_says_how_to_proceed(small, tmp_path):
    pytest.importorskip("submitit")
    with pytest.raises(ConfigError, match="needs `sbatch` on PATH.*--slurm-cluster local"):
        run_suite(small, ResultStore(tmp_path / "s"), executor=ExecutorConfig(kind="slurm"), show_progress=False)
    store = tmp_path / "cli-store"
    code = main(["run", "--suite", str(tmp_path / "small.toml"), "--store", str(store), "--executor", "slurm"])
    assert code == 2 and not store.exists()  # refused before anything is written


def test_more_jobs_than_cores_gets_a_note(small, reference_store, tmp_path, capsys, monkeypatch):
    import robustbench_dice.executors as executors

    monkeypatch.setattr(executors, "default_jobs", lambda: 2)
    suite_file = tmp_path / "small.toml"  # every run already stored: no worker is started
    command = ["run", "--suite", str(suite_file), "--store", str(reference_store.root), "--tables", str(tmp_path / "t")]
    assert main([*command, "--jobs", "3", "--quiet"]) == 0
    assert "note: --jobs 3 is more than the 2 core(s) here" in capsys.readouterr().out
    assert main([*command, "--jobs", "2", "--quiet"]) == 0
    assert "note: --jobs" not in capsys.readouterr().out
