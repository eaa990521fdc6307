"""Command line of robustbench-dice: one scenario (simulate), suites (run, tables, figures, prune), plugins (list,
check), DICE's influence experiments (influence) and datasets (download)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, DatasetNotFoundError
from .figures import FIGURE_KINDS, SUITE_FIGURES
from .io import check_writable_folder, json_text
from .scenario import Scenario, parse_param_pairs

if TYPE_CHECKING:
    from .store import ResultStore

_LIST_FIELDS = {"hidden"}
_TABLE_FIELDS = {"attack_params", "defense_params"}
FIGURE_SUITES = ("quick", "paper")  # whose runs `figures` draws by default: those behind results/figures
FAILURES_SHOWN = 5  # failed runs listed with their error after a suite; the rest are counted


def _add_scenario_flags(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(Scenario):
        flag = "--" + f.name.replace("_", "-")
        # argparse %-formats help strings: a literal % in a field's help (e.g. "80% train") must be doubled
        field_help = f.metadata.get("help", "").replace("%", "%%")
        help_text = f"{field_help} (default: {f.default if f.default is not dataclasses.MISSING else '{}'})"
        if f.name in _TABLE_FIELDS:
            parser.add_argument(
                flag[:-1],
                flag,  # the plural too, as `influence poisoning --attack-params` spells it
                dest=f.name,
                action="append",
                default=None,
                metavar="KEY=VALUE",
                help=f"{field_help}; repeatable, VALUE is a TOML literal",
            )
        elif str(f.type).startswith("bool"):
            parser.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_text)
        elif f.name in _LIST_FIELDS:
            parser.add_argument(flag, dest=f.name, type=int, nargs="+", default=None, help=help_text)
        else:
            ann = str(f.type)
            kind = int if ann.startswith("int") else float if ann.startswith("float") else str
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)


def _config_from_stdin(args: argparse.Namespace) -> None:
    """``--config -``: read standard input once (TOML, or JSON when it starts with ``{``) and keep its text."""
    if args.config == "-":
        text = sys.stdin.read()
        args.config_text = (text, "json" if text.lstrip().startswith("{") else "toml")


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    """The TOML config (if any) with every flag given on the command line laid over it."""
    if getattr(args, "config_text", None) is not None:
        text, kind = args.config_text
        base = Scenario.from_text(text, kind).to_dict()
    else:
        base = Scenario.from_file(args.config).to_dict() if args.config else {}
    count, fraction = getattr(args, "byzantine", None), getattr(args, "byzantine_fraction", None)
    if count is not None and fraction is not None:  # the fraction would override the count, silently
        raise ConfigError(
            f"give --byzantine or --byzantine-fraction, not both (got {count} and {fraction}): the fraction overrides"
            " the count"
        )
    if count is not None:  # a count on the command line lays over a fraction in the config, as every flag does
        base["byzantine_fraction"] = None
    for f in dataclasses.fields(Scenario):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if f.name in _TABLE_FIELDS:
            value = {**base.get(f.name, {}), **parse_param_pairs(value, "--" + f.name[:-1].replace("_", "-"))}
        base[f.name] = value
    return Scenario.from_dict(base)


def _progress_bar(total_label: str) -> Any:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=total_label, unit="round", leave=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update


def _add_plugins_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugins",
        action="append",
        metavar="DIR",
        help="also load plugins (attacks, defenses, datasets, models, topologies) from the .py files in DIR (repeatable)",
    )


def _load_user_plugins(args: argparse.Namespace) -> None:
    from .registry import load_builtin_plugins, load_plugin_folder

    load_builtin_plugins()
    for folder in getattr(args, "plugins", None) or []:
        for failure in load_plugin_folder(folder):
            print(f"robustbench-dice: warning: plugin file failed to import: {failure}", file=sys.stderr)


def _auc_text(value: float | None, reason: str | None) -> str:
    return f"{value:.3f}" if value is not None else f"n/a ({reason})"


def _recorded(args: argparse.Namespace) -> dict[str, Any] | None:
    """The JSON object of a ``--config`` that is a stored record or a ``simulate --json`` result, else None."""
    import json

    if getattr(args, "config_text", None) is not None:
        text, kind = args.config_text
        data = json.loads(text) if kind == "json" else None  # parsed already by Scenario.from_text: valid JSON
    elif args.config is None or Path(args.config).suffix.lower() != ".json":
        return None
    else:
        data = json.loads(Path(args.config).read_text())  # parsed already by Scenario.from_file: valid JSON
    return data if isinstance(data, dict) else None


def _note_changed_plugin_code(data: dict[str, Any] | None, scenario: Scenario) -> None:
    """A stored record re-run where a plugin's code it was made with (its file, a helper module of the user's) has
    changed since: say which."""
    from .registry import plugin_code

    recorded = (data or {}).get("plugin_code")
    if not isinstance(recorded, dict):
        return
    now = plugin_code(scenario)
    changed = sorted(plugin for plugin, digest in recorded.items() if now.get(plugin) != digest)
    if changed:
        print(
            f"note: the code of {', '.join(changed)} (its file or a module of yours it imports) is not the one this"
            " record was made with (or is not loaded):"
            " the numbers may differ from the record's",
            file=sys.stderr,
        )


def _recorded_threads(data: dict[str, Any] | None) -> int | None:
    """The torch thread count a JSON record or result was made with (suite runs: 1), else None."""
    if data is None:
        return None
    result = data.get("result", data)
    timings = result.get("timings") if isinstance(result, dict) else None
    if isinstance(timings, dict) and isinstance(timings.get("threads"), int):
        return int(timings["threads"])
    from .runner import RUN_THREADS

    return RUN_THREADS if "key" in data else None  # a store record from before threads were recorded


def _consensus_text(distance: float | None) -> str:
    return "n/a (diverged)" if distance is None or distance != distance else f"{distance:.3g}"


def cmd_simulate(args: argparse.Namespace) -> int:
    import torch

    from .engine import simulate

    _load_user_plugins(args)
    _config_from_stdin(args)
    scenario = scenario_from_args(args)
    for unused in scenario.unused_fields():
        print(f"note: {unused} is ignored", file=sys.stderr)
    if scenario.attack != "none" and scenario.n_byzantine == 0:
        print(
            f"note: attack {scenario.attack!r} has no Byzantine node to act through, so this run is honest"
            " (set --byzantine or --byzantine-fraction)",
            file=sys.stderr,
        )
    recorded = _recorded(args)
    _note_changed_plugin_code(recorded, scenario)
    previous = torch.get_num_threads()
    threads = args.threads if args.threads is not None else (_recorded_threads(recorded) or previous)
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if args.json and args.json != "-":  # checked before the run, which would otherwise be lost at the end
        if Path(args.json).is_dir():
            raise ConfigError(f"--json {args.json!r} is a folder; give the file to write, e.g. {args.json}/run.json")
        check_writable_folder(Path(args.json).parent, "--json output folder")
    torch.set_num_threads(threads)
    try:
        result = simulate(scenario, progress=None if args.quiet else _progress_bar("simulate"))
    finally:
        torch.set_num_threads(previous)  # main() may be called in-process (tests, notebooks)
    # with --json -, stdout carries the JSON alone (for a pipe) and the summary goes to stderr
    to_stdout = args.json == "-"
    say = functools.partial(print, file=sys.stderr if to_stdout else sys.stdout)
    if to_stdout:
        sys.stdout.write(json_text(result.to_dict()))
    elif args.json:
        result.write_json(args.json)
    if result.status != "ok":
        say(f"{result.status}: {result.reason}")
        return 0
    s = scenario
    resolved = "".join(f", {key}={value} (auto)" for key, value in result.auto_params.items())
    say(
        f"{s.dataset}/{s.model} on {s.topology} ({s.nodes} nodes, {len(result.byzantine)} Byzantine,"
        f" attack={s.attack}, defense={s.defense}{resolved}), {s.rounds} rounds, seed {s.seed}"
    )
    say(
        f"  final honest test accuracy: mean {result.final_accuracy_mean:.4f}, worst node {result.final_accuracy_worst:.4f};"
        f" consensus distance {_consensus_text(result.curve[-1].consensus_distance if result.curve else None)}"
    )
    say(
        f"  time per round: {1e3 * result.timings['seconds_per_round']:.2f} ms"
        f" on {result.versions.get('gpu') or f'{threads} thread(s)'}"
        f" (spectral gap {result.topology['spectral_gap']:.4f})"
    )
    if s.defense != "gossip" or result.byzantine:
        say(
            f"  detection AUC: edge {_auc_text(result.edge_auc, result.edge_auc_reason)},"
            f" node {_auc_text(result.node_auc, result.node_auc_reason)}"
        )
    if s.track_influence:
        from .tables import influence_auc

        by_influence = influence_auc(result.to_dict())
        say(
            f"  proximal influence as detector (score -sum_t Prox): edge AUC {_auc_text(by_influence.value, by_influence.reason)}"
        )
    if result.honest_edges is not None:
        ttd = (
            result.time_to_detection
            if result.time_to_detection is not None
            else f"n/a ({result.time_to_detection_reason})"
        )
        say(
            f"  pruned: {len(result.pruned_edges)} edges, {result.honest_edges_wrongly_pruned} of"
            f" {result.honest_edges} honest edges wrongly; time to detection: {ttd}"
        )
    if result.diverged:
        say("  warning: some honest models have non-finite parameters (diverged)")
    if args.json and not to_stdout:
        say(f"  result written to {args.json}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .datasets import DATASETS
    from .mixing import MIXING_RULES
    from .models import MODELS
    from .registry import ATTACKS, DEFENSES, LOAD_ERRORS, parameters, type_name
    from .topology import TOPOLOGIES

    _load_user_plugins(args)
    groups: dict[str, Any] = {
        "attacks": ATTACKS,
        "defenses": DEFENSES,
        "topologies": TOPOLOGIES,
        "mixing": MIXING_RULES,
        "datasets": DATASETS,
        "models": MODELS,
    }
    for group in [args.what] if args.what else list(groups):
        print(f"{group}:")
        entries = groups[group]
        for name in sorted(entries):
            if not isinstance(entries[name], str):  # a plugin class
                cls = entries[name]
                bound = getattr(cls, "byzantine_bound", None)
                params = ", ".join(
                    f"{f.name}: {type_name(f.type)} = {f.default!r}" + (" or 'auto'" if f.name == bound else "")
                    for f in parameters(cls)
                )
                print(f"  {name:<22} {cls.description()}" + (f"  [{params}]" if params else ""))
            else:
                print(f"  {name:<22} {entries[name]}")
    if LOAD_ERRORS and args.what != "mixing":  # a broken file may have meant to register any other kind
        print("plugin files that failed to import:")
        for failure in LOAD_ERRORS:
            print(f"  {failure}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .registry import load_plugin_file

    _load_user_plugins(args)
    target = Path(args.path)
    if not target.is_dir():
        try:
            classes = load_plugin_file(args.path)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's file: report what it raised
            print(
                f"robustbench-dice: error: {args.path} failed to import: {type(exc).__name__}: {exc}", file=sys.stderr
            )
            return 1
        if _registers_nothing(target, classes):
            raise ConfigError(f"{args.path} registers no plugin ({_HOW_TO_REGISTER})")
        failed, skipped = _check_plugin_file(target, classes, args)
    else:  # every plugin file of a folder, as --plugins loads it (all of them before any is checked)
        files = sorted(p for p in target.glob("*.py") if not p.name.startswith("_"))
        if not files:
            raise ConfigError(f"plugin folder {args.path!r} holds no .py file (files starting with '_' are skipped)")
        failed = skipped = 0
        loaded = []
        for path in files:
            try:
                loaded.append((path, load_plugin_file(path)))
            except Exception as exc:  # noqa: BLE001
                print(f"FAIL  {path.name}: imports  ({type(exc).__name__}: {exc})")
                failed += 1
        for path, classes in loaded:
            if _registers_nothing(path, classes):
                print(f"note: {path.name} registers no plugin; nothing to check")
                continue
            print(f"{path.name}:")
            file_failed, file_skipped = _check_plugin_file(path, classes, args)
            failed, skipped = failed + file_failed, skipped + file_skipped
    print(
        f"{'all checks passed' if not failed else f'{failed} check(s) failed'}"
        + (f", {skipped} skipped" * bool(skipped))
    )
    return 1 if failed else 0


_HOW_TO_REGISTER = (
    "decorate a class with @register_attack or @register_defense, a loader function with @register_dataset(NAME),"
    " a module factory with @register_model(NAME), a graph builder with @register_topology(NAME)"
)


def _registers_nothing(path: Path, classes: list[Any]) -> bool:
    """Whether a loaded plugin file registered no attack or defense class and no dataset, model or topology."""
    from .registry import functions_of_file

    return not classes and not any(functions_of_file(path).values())


def _check_plugin_file(path: Path, classes: list[Any], args: argparse.Namespace) -> tuple[int, int]:
    """Runs the conformance checks on what one loaded plugin file registers, printing each; (failed, skipped)."""
    from .conformance import (
        run_conformance,
        run_dataset_conformance,
        run_model_conformance,
        run_topology_conformance,
    )
    from .registry import functions_of_file

    functions = functions_of_file(path)
    # a model is checked on the file's own dataset where it registers one
    dataset = args.dataset or next(iter(functions["dataset"]), "digits")
    results = [r for cls in classes for r in run_conformance(cls)]
    results += [r for name in functions["dataset"] for r in run_dataset_conformance(name, args.data_root)]
    results += [r for name in functions["model"] for r in run_model_conformance(name, dataset, args.data_root)]
    results += [r for name in functions["topology"] for r in run_topology_conformance(name)]
    for r in results:
        verdict = "SKIP" if r.skipped else "PASS" if r.passed else "FAIL"
        print(f"{verdict}  {r.plugin}: {r.check}" + (f"  ({r.detail})" if r.detail else ""))
    return sum(not r.passed for r in results), sum(r.skipped for r in results)


def cmd_download(args: argparse.Namespace) -> int:
    from .datasets import download

    download(args.dataset, args.data_root)
    print(f"{args.dataset} downloaded under {args.data_root}")
    return 0


QUICK_INFLUENCE: dict[str, dict[str, Any]] = {  # --quick: seconds, for smoke tests; flags still override it
    "alignment": dict(
        topologies=("ring",), lrs=(0.1, 1.0), sweep_topologies=("ring",), rounds=40, probe_rounds=3, nodes=8
    ),
    "cascade": dict(topologies=("ring", "star"), rounds=40, probe_rounds=3, nodes=8, horizon=3),
    "poisoning": dict(topologies=("ring",), rounds=40, probe_rounds=3, nodes=8, byzantine=2),
}


def _with_default(help_text: str, shown: object) -> str:
    """``help_text`` with its default appended, unless it says what the default is itself."""
    return help_text if "(default:" in help_text else f"{help_text} (default: {shown})"


def _add_config_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One flag per field of an experiment's config dataclass; tuple fields take several values."""
    defaults = config_class()
    for f in dataclasses.fields(config_class):
        ann, default = str(f.type), getattr(defaults, f.name)
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        kind = float if "float" in ann else int if ann.startswith(("int", "tuple[int")) else str
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=kind,
            nargs=("*" if f.name == "sweep_topologies" else "+") if ann.startswith("tuple") else None,
            default=None,
            help=_with_default(f.metadata.get("help", ""), shown).replace("%", "%%"),
        )


def cmd_influence(args: argparse.Namespace) -> int:
    from .influence import AlignmentConfig, command_line
    from .paper import EXPERIMENTS, InfluenceJob

    _load_user_plugins(args)
    experiment = EXPERIMENTS[args.experiment]
    config_class = experiment.config
    values = dict(QUICK_INFLUENCE[args.experiment]) if args.quick else {}
    values.update(
        {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class) if getattr(args, f.name) is not None}
    )
    config = config_class(**values)
    # before the training runs, not after them
    out = check_writable_folder(args.out or config_class.default_out, "output folder")
    job = InfluenceJob(args.experiment, out, config)
    runs = len(config.settings()) if isinstance(config, AlignmentConfig) else len(config.topologies)
    what = f"{runs} training run{'' if runs == 1 else 's'}"
    print(f"influence {args.experiment}: {what}, writing to {out}/ ({command_line(args.experiment, config, out)})")
    job.run(log=print)
    *first, last = sorted(experiment.outputs)
    print(f"{args.experiment} written to {out}/: {', '.join(first)} and {last}")
    if out == config_class.default_out and config != config_class():
        print(
            f"note: {out}/ now holds a configuration other than the committed one (the paper suite's);"
            " `robustbench-dice run --suite paper` recomputes the committed one, and `--out DIR` keeps them apart"
        )
    return 0


def _run_suites(args: argparse.Namespace) -> tuple[list[Any], list[Any], Any]:
    """(the suites ``run`` computes, the whole suites whose tables it writes, the paper plan or None): the two differ
    when ``--only`` cuts the grid."""
    from .suite import narrow, parse_only

    whole, plan = _suites(args.suite, args.data_root, args.influence)
    only = parse_only(args.only or [])
    return (narrow(whole, only) if only else whole), whole, plan


def _suites(name: str, data_root: str | None, influence: str) -> tuple[list[Any], Any]:
    """The grid suites behind ``--suite name`` and, for ``paper``, its whole plan (else None)."""
    from .paper import paper_plan
    from .suite import load_suite

    if name == "paper":
        plan = paper_plan(data_root, influence)
        return plan.suites, plan
    return [load_suite(name)], None


def _suite_scenarios(suites: list[Any]) -> dict[str, Any]:
    """Every run of ``suites``, by its store key."""
    from .store import by_key

    return by_key(s for suite in suites for s in suite.scenarios())


def _suite_name(suite: str) -> str:
    """A suite's name as the results folders use it: a suite file's stem, or the built-in name as given."""
    return Path(suite).stem if suite.endswith(".toml") else suite


def _tables_folder(suite: str, given: str | None) -> str:
    """``given``, else where a suite's tables go: results/tables for quick, results/NAME/tables otherwise."""
    if given:
        return given
    name = _suite_name(suite)
    return "results/tables" if name == "quick" else f"results/{name}/tables"


def _figures_folder(suite: str | None, given: str | None) -> str:
    """``given``, else where figures go: results/figures for the committed ones (quick and paper suites),
    results/NAME/figures for any other suite (or 'all'), so that they do not overwrite the committed ones."""
    if given:
        return given
    name = None if suite is None else _suite_name(suite)
    return "results/figures" if name is None or name in FIGURE_SUITES else f"results/{name}/figures"


def _of_whole(suite: Any, whole: Any) -> str:
    """`` of N (--only)`` where ``--only`` cut ``whole`` down to ``suite``, else nothing."""
    return "" if suite == whole else f" of its {len(whole.scenarios())} (--only)"


def _dry_run(args: argparse.Namespace) -> int:
    """What ``run`` would do, from the store as it is: nothing is run, created or written."""
    from .runner import check_local_runs, pending
    from .store import ResultStore
    from .suite import GRID_KEYS

    suites, whole, plan = _run_suites(args)
    store = ResultStore(args.store, create=False)
    total_todo = 0
    for suite, full in zip(suites, whole, strict=True):
        todo, stored = pending(suite, store, args.force)
        if args.executor == "local":
            check_local_runs(suite, todo)
        total_todo += len(todo)
        sizes = {name: len(getattr(suite, name)) for name in GRID_KEYS}
        grid = " x ".join(f"{size} {name}" for name, size in sizes.items() if size != 1)
        print(
            f"suite {suite.name!r}: {stored + len(todo)} runs ({grid or 'one cell'}){_of_whole(suite, full)};"
            f" {stored} stored, {len(todo)} to run"
        )
    if plan is not None:
        for line in plan.missing:
            print(f"paper suite: leaving out {line}")
        for job in plan.influence if not args.only else ():
            state = "up to date" if job.up_to_date() and not args.force else "would run"
            print(f"influence {job.kind} in {job.out}/: {state}")
    print(f"dry run: {total_todo} runs would be computed into {args.store}/; nothing was run")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .executors import ExecutorConfig, default_jobs
    from .runner import run_suite
    from .store import ResultStore
    from .tables import write_tables

    _load_user_plugins(args)
    executor = ExecutorConfig(  # its flags are checked for a dry run too
        kind=args.executor,
        jobs=args.jobs,
        address=args.address,
        connect_timeout_s=args.connect_timeout,
        slurm_partition=args.slurm_partition,
        slurm_time_min=args.slurm_time,
        slurm_mem_gb=args.slurm_mem,
        slurm_cpus=args.slurm_cpus,
        slurm_parallel=args.slurm_parallel,
        runs_per_job=args.runs_per_job,
        slurm_cluster=args.slurm_cluster,
    )
    if args.dry_run:
        return _dry_run(args)
    executor.check_available()  # before the store folder is created
    suites, whole, plan = _run_suites(args)
    if plan is not None:
        for line in plan.missing:
            print(f"paper suite: leaving out {line}")
    store = ResultStore(args.store)
    # the folders written after the runs, checked before them
    tables = check_writable_folder(_tables_folder(args.suite, args.tables), "tables folder")
    if plan is not None and not args.only:
        for job in plan.influence:
            check_writable_folder(job.out, "influence folder")
    if executor.kind == "local" and (executor.jobs or 0) > default_jobs():
        # each worker is a process with its own torch (hundreds of MB) running one thread
        print(
            f"note: --jobs {executor.jobs} is more than the {default_jobs()} core(s) here; every run uses one thread,"
            " so the extra jobs only share the cores (and each holds its own memory)"
        )
    where = {
        "local": f"{executor.jobs or default_jobs()} local job(s)",
        "dask": f"Dask scheduler {executor.address}",
        "slurm": f"submitit ({executor.slurm_cluster}), {executor.runs_per_job} runs per job",
    }[executor.kind]
    failed = 0
    for suite, full in zip(suites, whole, strict=True):
        cells = len(suite.scenarios())
        print(f"suite {suite.name!r}: {cells} runs{_of_whole(suite, full)}, store {args.store}, {where}")
        start = time.perf_counter()
        progress = run_suite(
            suite,
            store,
            executor=executor,
            force=args.force,
            plugin_folders=tuple(args.plugins or ()),
            show_progress=not args.quiet,
        )
        for line in store.corrupted:
            print(f"warning: corrupted record recomputed: {line}", file=sys.stderr)
        store.corrupted.clear()
        print(f"{progress.line()} in {time.perf_counter() - start:.1f}s; logs in {args.store}/logs")
        for key, error in progress.failures[:FAILURES_SHOWN]:
            print(f"  failed: {error.splitlines()[0] if error else '?'}  ({args.store}/logs/{key}.log)")
        if len(progress.failures) > FAILURES_SHOWN:
            print(f"  ... and {len(progress.failures) - FAILURES_SHOWN} more failed runs; their logs are beside these")
        failed += progress.failed
    scenarios = _suite_scenarios(whole)  # the whole suite's tables, whatever --only ran
    _note_not_run(store, scenarios)
    written = write_tables(store, tables, scenarios)
    print(f"tables written to {tables}/ ({', '.join(p.name for p in written[:4])}, ...)")
    if plan is not None and args.only:
        print("influence experiments left as they are (--only cuts the grid runs only)")
    elif plan is not None:
        for job in plan.influence:
            if job.up_to_date() and not args.force:
                print(f"influence {job.kind} in {job.out}/ is up to date (same configuration; --force reruns it)")
                continue
            print(f"influence {job.kind} -> {job.out}/")
            job.run(log=print)
        print("figures: robustbench-dice figures")
    return 1 if failed else 0


def cmd_tables(args: argparse.Namespace) -> int:
    from .store import ResultStore
    from .tables import write_tables_of

    _load_user_plugins(args)  # a suite file may name them
    # one suite's runs by default, as `run` writes them: a store usually holds several suites' runs
    suite = None if args.suite == "all" else _suites(args.suite, args.data_root, "results/influence")[0]
    scenarios = None if suite is None else _suite_scenarios(suite)
    out = _tables_folder(args.suite, args.out)
    store = ResultStore(args.store, create=False)
    # read once: a large store takes seconds to parse
    if scenarios is None:
        records = store.records()
    else:
        records = store.records_of(scenarios) if _note_not_run(store, scenarios) else []
    if not records:
        hint = "" if suite is None else f"; `robustbench-dice run --suite {args.suite} --store {args.store}` runs them"
        hint += f" ({_unjudged_text(store, 'left out')})" if store.unjudged else ""
        raise ConfigError(f"no stored runs of suite {args.suite!r} in {args.store}/{hint}")  # not empty tables
    written = write_tables_of(records, out)
    print(f"{len(written)} files written to {out}/")
    _note_stale(store)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from .figures import write_figures
    from .store import ResultStore

    _load_user_plugins(args)  # a suite file may name them
    # by default the runs behind the committed figures (quick and paper suites): other suites' runs in the same
    # store would otherwise mix into curves of the same block
    names = FIGURE_SUITES if args.suite is None else (args.suite,)
    scenarios_of = {
        name: None if name == "all" else _suite_scenarios(_suites(name, args.data_root, args.influence)[0])
        for name in names
    }
    chosen = [s for s in scenarios_of.values() if s is not None]
    # the named suites' runs together; None (a suite named 'all'): every record
    pooled = {k: s for keyed in chosen for k, s in keyed.items()} if len(chosen) == len(scenarios_of) else None
    store = ResultStore(args.store, create=False)
    has_influence = Path(args.influence).is_dir()
    if not store.root.is_dir() and not has_influence:  # e.g. run away from the checkout: every figure would be empty
        raise ConfigError(
            f"nothing to draw: no result store at {args.store}/ and no influence results at {args.influence}/"
            " (`robustbench-dice run` fills the store; --store and --influence point elsewhere)"
        )
    if not has_influence:
        print(f"note: no influence results at {args.influence}/; the DICE figures are left out")
    if not store.root.is_dir():
        print(f"note: no result store at {args.store}/; only the figures of {args.influence}/")
    else:
        for name, keyed in scenarios_of.items():
            missing = len(_not_stored(store, keyed)) if keyed is not None else 0
            if missing:  # e.g. `figures` after `run` alone: the paper suite's curves would be left out unsaid
                print(
                    f"note: {missing} of the {len(keyed or ())} runs of suite {name!r} are not in {args.store}/; the"
                    f" figures drawn from them are partial or left out (`robustbench-dice run --suite {name}` computes"
                    " them)"
                )
    out = check_writable_folder(_figures_folder(args.suite, args.out), "figures folder")
    if any(len(keyed) >= LARGE_SUITE for keyed in chosen):
        print(f"reading the runs of {', '.join(names)} from {args.store}/ for the figures ...", flush=True)
    kinds = args.kind or FIGURE_KINDS
    per_suite = [k for k in kinds if k in SUITE_FIGURES]
    log = functools.partial(print, flush=True)
    written = write_figures(store, args.influence, out, pooled, kinds=[k for k in kinds if k not in per_suite], log=log)
    for name, scenarios in scenarios_of.items() if per_suite else ():  # pooled suites: a grid no table has
        written += write_figures(
            store, args.influence, out, scenarios, kinds=per_suite, suite=_suite_name(name), log=log
        )
    if not written:  # a script that went on to use the figures would find none, after a success
        raise ConfigError(
            f"no figure could be drawn: none of {', '.join(kinds)} has its runs in {args.store}/ or its results in"
            f" {args.influence}/ (see the notes above)"
        )
    print(f"{len(written)} files written to {out}/")
    _note_stale(store)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_summaries, run_label

    if args.show < 0:  # a slice [:-3] would list all but the three smallest
        raise ConfigError(f"--show must be >= 0, got {args.show}")
    result = compare_summaries(args.before, args.after, args.tolerance)
    same = result.compared - result.runs_differing()
    print(
        f"compared {result.compared} runs: {same} the same, {result.runs_differing()} differ beyond tolerance"
        f" {args.tolerance:g} ({len(result.differences)} value(s)); {len(result.only_before)} only in {args.before},"
        f" {len(result.only_after)} only in {args.after}"
    )
    largest = sorted(result.differences, key=lambda d: d.size, reverse=True)[: args.show]
    if largest:
        print(f"largest differences ({len(largest)} of {len(result.differences)}):")
        for difference in largest:
            print(f"  {difference}")
    for runs, side in ((result.only_before, args.before), (result.only_after, args.after)):
        if runs:
            shown = "; ".join(run_label(run) for run in runs[:3])
            print(f"only in {side}: {shown}{' ...' if len(runs) > 3 else ''}")
    for columns, side, other in (
        (result.columns_only_before, args.before, args.after),
        (result.columns_only_after, args.after, args.before),
    ):
        if columns:
            print(f"columns only in {side}, not compared ({other} lacks them): {', '.join(columns)}")
    if result.compared == 0:
        print("note: the two share no run: summaries of different suites (compare a suite with a re-run of itself)")
    return 0 if result.same else 1


def cmd_prune(args: argparse.Namespace) -> int:
    from .store import ResultStore

    _load_user_plugins(args)  # records of runs with your own plugins are judged only with them loaded
    store = ResultStore(args.store, create=False)
    if not store.root.is_dir():  # a mistyped --store would otherwise read as a clean store
        print(f"no result store at {args.store}/; nothing to prune")
        return 0
    removed = store.prune(dry_run=args.dry_run)
    records = sum(path.suffix == ".json" for path in removed)
    verb = "would remove" if args.dry_run else "removed"
    print(
        f"{verb} {records} record(s) of another results version or plugin code, or unreadable, and their"
        f" {len(removed) - records} log(s), from {args.store}/"
    )
    for path in removed if args.dry_run else ():
        print(f"  {path}")
    _note_unjudged(store, "kept")
    return 0


LARGE_SUITE = 5000  # runs; reading this many records takes more than a second or two


def _not_stored(store: ResultStore, scenarios: dict[str, Any]) -> list[Any]:
    """The scenarios (by key) the store holds no record of."""
    return [s for key, s in scenarios.items() if not store.path(key).is_file()]


def _note_not_run(store: ResultStore, scenarios: dict[str, Any]) -> int:
    """Say how many of a suite's runs (by key) the store lacks (the tables mark them "not run yet"); return how many
    it has."""
    from .registry import plugin_code

    missing = _not_stored(store, scenarios)
    stored = len(scenarios) - len(missing)
    if stored >= LARGE_SUITE:  # reading them takes a while: say so rather than sit silent
        print(f"reading {stored:,} stored runs from {store.root}/ for the tables ...", flush=True)
    if missing:
        # an edit to a plugin file of the user's makes its runs new ones: the likely reason right after one
        edited = any(plugin_code(s) for s in missing)
        print(
            f"note: {len(missing)} of the suite's {len(scenarios)} runs are not in the store yet; the"
            " tables mark their cells, and the worst cases and rankings that need them, 'not run yet' (running the"
            " suite without --only computes them"
            + ("; runs of your own plugins are new runs after an edit to their code)" if edited else ")")
        )
    return stored


def _note_stale(store: ResultStore) -> None:
    if store.stale:
        print(
            f"note: left out {store.stale} stored record(s) made by another results version or by an older version"
            " of a plugin file of yours (not comparable with current numbers; `robustbench-dice run` computes current ones;"
            " `robustbench-dice prune` deletes them)"
        )
    unreadable = sorted(set(store.corrupted))  # a record read twice (figures of two suites) is named once
    if unreadable:
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        print(
            f"note: left out {len(unreadable)} stored record(s) that do not read, as not run"
            f" (`robustbench-dice run` recomputes them; `robustbench-dice prune` deletes them): {unreadable[0]}{more}"
        )
    _note_unjudged(store, "left out")


def _note_unjudged(store: ResultStore, verb: str) -> None:
    if store.unjudged:
        print(f"note: {_unjudged_text(store, verb)}")


def _unjudged_text(store: ResultStore, verb: str) -> str:
    """Which records were passed over because they name plugins this command did not load."""
    plugins = ", ".join(f"{plugin} ({count})" for plugin, count in sorted(store.unjudged.items()))
    return (
        f"{verb} {store.unjudged_records} stored record(s) of runs with plugins not loaded here: {plugins};"
        " give their folder with --plugins DIR"
    )


DESCRIPTION = "Byzantine-robustness benchmarks for decentralized learning, built around DICE (ICLR 2025)."
EXAMPLES = """examples:
  robustbench-dice run                          the quick suite (192 runs), then its tables
  robustbench-dice run --suite paper            the DICE paper's experiments, then `robustbench-dice figures`
  robustbench-dice simulate --topology torus --attack label_flip --byzantine 3 --defense dice_prune
  robustbench-dice list defenses                registered plugins with their parameters
  robustbench-dice check my_defense.py          conformance suite for a plugin file
  robustbench-dice compare results/tables mine  run-by-run differences of two suites' summaries

`robustbench-dice COMMAND --help` gives each command's options; docs/ in the repository has the guides."""


def version_text() -> str:
    """What ``--version`` prints: the package, the results version its records carry, and the libraries whose
    arithmetic the numbers depend on."""
    import platform

    from .engine import versions
    from .setup import cuda_status
    from .store import RESULTS_VERSION

    v = versions()
    return (
        f"robustbench-dice {v['robustbench_dice']} (results version {RESULTS_VERSION};"
        f" torch {v['torch']} with {v['cpu_capability']} CPU kernels, {cuda_status()}; numpy {v['numpy']},"
        f" python {platform.python_version()})"
    )


class _VersionAction(argparse.Action):
    """``--version``, with the text built only when asked (it imports the engine)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustbench-dice",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="print the version, the results version and torch's, and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="run one scenario and print its summary")
    sim.add_argument(
        "--config",
        help="scenario TOML file, or a JSON record from the result store or simulate --json (to re-run it);"
        " '-' reads either from standard input; flags override its values",
    )
    sim.add_argument(
        "--json", metavar="OUT", help="write the RunResult as JSON to OUT ('-': to stdout, the summary to stderr)"
    )
    sim.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: all cores; with a JSON --config, the count it was made with, 1 for suite"
        " runs, since matmul rounding depends on it and the re-run should give the same numbers)",
    )
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_plugins_flag(sim)
    _add_scenario_flags(sim)
    sim.set_defaults(func=cmd_simulate)

    run = sub.add_parser("run", help="run a suite (default: quick) into the result store, then write the tables")
    run.add_argument("--suite", default="quick", help="built-in suite (quick, full, paper) or a suite TOML file")
    run.add_argument("--store", default="results/store", help="result store folder (default: results/store)")
    run.add_argument(
        "--tables", help="where the tables go (default: results/tables for quick, results/SUITE/tables otherwise)"
    )
    run.add_argument("--data-root", help="folder holding MNIST / CIFAR-10 for the paper suite (optional)")
    run.add_argument("--influence", default="results/influence", help="paper suite: influence experiments' folder")
    run.add_argument("--jobs", type=int, default=None, help="local worker processes (default: the cores available)")
    run.add_argument(
        "--executor", choices=["local", "dask", "slurm"], default="local", help="where runs execute (default: local)"
    )
    run.add_argument("--address", help="Dask scheduler address for --executor dask, e.g. tcp://10.0.0.5:8786")
    run.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for the Dask scheduler")
    slurm = run.add_argument_group("SLURM (--executor slurm, through submitit)")
    slurm.add_argument("--slurm-partition", help="partition (default: the cluster's default)")
    slurm.add_argument("--slurm-time", type=int, default=60, metavar="MIN", help="time limit per job (default: 60)")
    slurm.add_argument("--slurm-mem", type=float, default=4.0, metavar="GB", help="memory per job (default: 4)")
    slurm.add_argument("--slurm-cpus", type=int, default=1, help="CPUs per job (default: 1)")
    slurm.add_argument("--slurm-parallel", type=int, default=64, help="array jobs running at once (default: 64)")
    slurm.add_argument("--runs-per-job", type=int, default=8, help="suite runs packed into one job (default: 8)")
    slurm.add_argument(
        "--slurm-cluster",
        choices=["slurm", "local"],
        default="slurm",
        help="'local' runs the same submitit jobs on this machine, to try a setup without a cluster",
    )
    run.add_argument(
        "--only",
        action="append",
        metavar="KEY=VALUES",
        help="run only the suite's cells with these values (repeatable; comma-separated values; keys: dataset, model,"
        " nodes, byzantine, partition, topology, attack, defense, seed; a plugin by name or by its label, e.g."
        " defense=ubar or 'defense=krum(f=auto)'). The tables still cover the whole suite, from the store",
    )
    run.add_argument("--force", action="store_true", help="recompute runs that are already stored")
    run.add_argument(
        "--dry-run", action="store_true", help="say how many runs the suite has and how many are stored; run nothing"
    )
    run.add_argument(
        "--quiet",
        action="store_true",
        help="no progress (otherwise a bar on a terminal, and a line every minute when output goes to a file)",
    )
    _add_plugins_flag(run)
    run.set_defaults(func=cmd_run)

    tab = sub.add_parser("tables", help="write the fixed tables from the result store only")
    tab.add_argument("--store", default="results/store", help="result store folder (default: results/store)")
    tab.add_argument(
        "--suite",
        default="quick",
        help="the runs of this suite, as `run --suite` takes it (default: quick), or 'all': every record in the store",
    )
    tab.add_argument("--out", help="output folder (default: results/tables for quick, results/SUITE/tables otherwise)")
    tab.add_argument("--data-root", help="with --suite paper: the folder holding MNIST / CIFAR-10")
    _add_plugins_flag(tab)
    tab.set_defaults(func=cmd_tables)

    fig = sub.add_parser("figures", help="write figures (PNG and PDF) from the result store and results/influence")
    fig.add_argument("--store", default="results/store", help="result store folder (default: results/store)")
    fig.add_argument("--influence", default="results/influence", help="output folder of `influence` experiments")
    fig.add_argument(
        "--out",
        help=f"output folder (default: results/figures for the {' and '.join(FIGURE_SUITES)} suites,"
        " results/SUITE/figures otherwise)",
    )
    fig.add_argument(
        "--suite",
        help="the runs of this suite, as `run --suite` takes it, or 'all': every record in the store"
        f" (default: the {' and '.join(FIGURE_SUITES)} suites')",
    )
    fig.add_argument(
        "--data-root", help="the folder holding MNIST / CIFAR-10, as given to `run --suite paper` (its runs on them)"
    )
    fig.add_argument(
        "--kind",
        action="append",
        choices=FIGURE_KINDS,
        metavar="KIND",
        help=f"draw only this kind of figure (repeatable; default: all): {', '.join(FIGURE_KINDS)}",
    )
    _add_plugins_flag(fig)
    fig.set_defaults(func=cmd_figures)

    cmp = sub.add_parser(
        "compare",
        help="compare two suites' summary.csv run by run (a re-run on another machine, or after a change)",
        description="Exit status 0 when every run matches within the tolerance and both have the same summary columns, 1 otherwise.",
    )
    cmp.add_argument("before", help="a summary.csv, or the tables folder holding one (e.g. results/tables)")
    cmp.add_argument("after", help="the other summary.csv or tables folder")
    cmp.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="largest difference taken as the same: absolute below 1, relative above (default 0: exact)",
    )
    cmp.add_argument("--show", type=int, default=10, help="how many of the largest differences to list")
    cmp.set_defaults(func=cmd_compare)

    prn = sub.add_parser(
        "prune",
        help="delete stored records of other results versions (or plugin code) and unreadable ones, with their logs",
    )
    prn.add_argument("--store", default="results/store", help="result store folder (default: results/store)")
    prn.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    _add_plugins_flag(prn)
    prn.set_defaults(func=cmd_prune)

    lst = sub.add_parser("list", help="list attacks, defenses, topologies, mixing rules, datasets, models")
    lst.add_argument("what", nargs="?", choices=["attacks", "defenses", "topologies", "mixing", "datasets", "models"])
    _add_plugins_flag(lst)
    lst.set_defaults(func=cmd_list)

    chk = sub.add_parser(
        "check", help="run the plugin conformance suite on the plugins one .py file (or a folder of them) registers"
    )
    chk.add_argument(
        "path", help="a plugin file, e.g. my_attack.py, or a folder: each of its .py files, as --plugins loads them"
    )
    chk.add_argument(
        "--data-root", default=None, help="the data_root given to dataset plugins (and to --dataset's loader)"
    )
    chk.add_argument(
        "--dataset",
        default=None,
        help="the dataset a model plugin is checked on (default: the file's own dataset plugin, else digits)",
    )
    _add_plugins_flag(chk)  # e.g. the folder of the dataset a model is checked on
    chk.set_defaults(func=cmd_check)

    from .paper import EXPERIMENTS

    inf = sub.add_parser("influence", help="DICE experiments: estimate vs ground truth, cascade decay, data poisoning")
    experiments = inf.add_subparsers(dest="experiment", required=True, metavar="{" + ",".join(EXPERIMENTS) + "}")
    for kind, experiment in EXPERIMENTS.items():
        exp = experiments.add_parser(kind, help=experiment.summary, description=experiment.summary)
        exp.add_argument("--out", default=None, help=f"output folder (default: {experiment.config.default_out})")
        exp.add_argument(
            "--quick", action="store_true", help="a small configuration (seconds) for smoke tests; flags override it"
        )
        _add_config_flags(exp, experiment.config)
        _add_plugins_flag(exp)  # a dataset, model or topology of your own
        exp.set_defaults(func=cmd_influence)

    dl = sub.add_parser("download", help="download a torchvision dataset (needs internet)")
    dl.add_argument("dataset", choices=["mnist", "fashion-mnist", "cifar10"])
    dl.add_argument("--data-root", required=True)
    dl.set_defaults(func=cmd_download)
    return parser


def _out_of_memory(exc: BaseException) -> bool:
    """numpy's and Python's MemoryError, torch's CUDA OutOfMemoryError, or torch's CPU allocator failing (a plain
    RuntimeError)."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError)
        and (type(exc).__name__ == "OutOfMemoryError" or "DefaultCPUAllocator: can't allocate memory" in str(exc))
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, DatasetNotFoundError) as exc:
        print(f"robustbench-dice: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        print(
            f"robustbench-dice: error: out of memory: {str(exc).strip() or type(exc).__name__}. The scenario is too"
            " large for this machine: fewer nodes (graphs and mixing matrices are N x N), a smaller model or batch",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        if exc.filename is None:  # not about a file the user named: a bug, so the traceback
            raise
        print(f"robustbench-dice: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = (
            "; finished runs are in the store, and the same command resumes from them" if args.func is cmd_run else ""
        )
        print(f"robustbench-dice: interrupted{kept}", file=sys.stderr)
        return 130
