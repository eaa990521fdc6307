"""The result store: one small JSON record per run, keyed by a hash of the canonical scenario (with the results
version, and the content of the files defining the plugins of the user's own that it uses).

A record is ``{"key", "status", "scenario", "result" | "error" | "reason", ...}``
written atomically, so a killed runner leaves whole records or none, and two
runners writing the same key write the same bytes for a deterministic run.
Nothing is pickled. A record that cannot be parsed, or whose content does not
match its key, is reported as corrupted and recomputed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .io import atomic_write_json, writable_folder
from .registry import plugin_code, unregistered_plugins
from .result import RunResult
from .scenario import Scenario

# Bump when a change to the engine, a plugin or a metric changes the numbers a scenario produces:
# stored records of other versions are then recomputed instead of reused.
RESULTS_VERSION = "3"  # 2: hand-written backward pass for dense models (rounding-level changes); 3: detection AUC
# ranks scores that overflowed to +-inf (it was n/a), and a NaN score makes it undefined (it was left out)


def scenario_key(scenario: Scenario) -> str:
    """Hash of the canonical scenario (every field, plugin parameters included), the results version and, for
    plugins that are not built in, the code of their files (:func:`~.registry.plugin_code`; built-in plugins' code
    is covered by the results version, so runs of built-ins only keep their keys)."""
    return _key(scenario.to_dict(), plugin_code(scenario))


def _key(scenario_data: dict[str, Any], code: dict[str, str]) -> str:
    content: dict[str, Any] = {"scenario": scenario_data, "results_version": RESULTS_VERSION}
    if code:
        content["plugin_code"] = code
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Record:
    key: str
    status: str  # ok | skipped | failed, or missing: a suite's run the store does not hold (never written)
    data: dict[str, Any]

    @property
    def result(self) -> RunResult | None:
        return RunResult.from_dict(self.data["result"]) if "result" in self.data else None


RUN_STATUSES = ("ok", "skipped", "failed")  # what a stored record's status may be


def _parse_record(text: str) -> Record:
    """The record a stored file's ``text`` holds; ``ValueError``, ``KeyError`` or ``TypeError`` (the store's
    "corrupted") when it does not hold one whose result the tables and figures can read."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise TypeError(f"a JSON {type(data).__name__}, not a record")
    record = Record(str(data["key"]), str(data["status"]), data)
    if record.status not in RUN_STATUSES:
        raise ValueError(f"status {record.status!r} is none of {', '.join(RUN_STATUSES)}")
    if record.status == "ok":
        if not isinstance(data["result"], dict):
            raise TypeError(f"its result is a JSON {type(data['result']).__name__}, not an object")
        RunResult.from_dict(data["result"])  # a field this version does not know, or a curve of the wrong shape
    return record


def by_key(scenarios: Iterable[Scenario]) -> dict[str, Scenario]:
    """``scenarios`` by :func:`scenario_key`, each once (a run may stand in more than one suite)."""
    return {scenario_key(s): s for s in scenarios}


NOT_RUN = "not run yet (in the suite, not in the store)"
CURRENT, STALE, UNREADABLE, UNJUDGED = "current", "stale", "unreadable", "unjudged"  # a stored file's state


def missing_record(scenario: Scenario) -> Record:
    """The stand-in for a run of a suite that the store does not hold: status ``missing``, reason :data:`NOT_RUN`.

    Tables and figures count it like a run without a value, so a cell, a worst case or a ranking that would need it
    says it is not available instead of being computed from the runs that happen to be stored.
    """
    key = scenario_key(scenario)
    return Record(key, "missing", {"key": key, "status": "missing", "scenario": scenario.to_dict(), "reason": NOT_RUN})


def _record_head(scenario: Scenario, status: str) -> dict[str, Any]:
    scenario_data, code = scenario.to_dict(), plugin_code(scenario)
    data: dict[str, Any] = {"key": _key(scenario_data, code), "status": status, "scenario": scenario_data}
    if code:
        data["plugin_code"] = code  # what the key covers besides the scenario, readable
    return data


def result_record(scenario: Scenario, result: RunResult) -> dict[str, Any]:
    data = _record_head(scenario, result.status)
    if result.status == "skipped":
        data["reason"] = result.reason
    else:
        data["result"] = result.to_dict()
    return data


def failure_record(scenario: Scenario, error: str, traceback_text: str) -> dict[str, Any]:
    return {**_record_head(scenario, "failed"), "error": error, "traceback": traceback_text}


class ResultStore:
    """A folder of ``<key>.json`` records.

    ``create=False`` is for commands that only read (or prune) it: a missing folder reads as an empty store and
    is not created, and the folder need not be writable.
    """

    def __init__(self, root: str | Path, create: bool = True):
        self.root = Path(root)
        self.corrupted: list[str] = []
        self.stale = 0  # records of other results versions seen by the last records() call (records_of(None))
        # plugins named by records that the last records() or prune() call kept without judging them: their
        # plugins are not loaded in this process (a --plugins folder not given), so neither their key nor their
        # results version can be checked
        self.unjudged: dict[str, int] = {}  # plugin -> records naming it
        self.unjudged_records = 0
        if not create:
            if self.root.exists() and not self.root.is_dir():  # else it reads as an empty store, "nothing stored"
                raise ConfigError(f"result store {str(self.root)!r} is a file, not a folder")
            return
        writable_folder(self.root, "result store")

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, scenario: Scenario) -> Record | None:
        """The stored record of ``scenario``, or None when absent or corrupted (corrupted keys are noted)."""
        return self._read(scenario_key(scenario), scenario)

    def _read(self, key: str, scenario: Scenario) -> Record | None:
        """:meth:`get` for a ``key`` already computed (``scenario_key(scenario)``)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            record = _parse_record(path.read_text())
            if record.key != key or record.data.get("scenario") != scenario.to_dict():
                raise ValueError("content does not match its key")
            return record
        except (ValueError, KeyError, TypeError) as exc:
            self.corrupted.append(f"{path.name}: {exc}")
            return None

    def put_result(self, scenario: Scenario, result: RunResult) -> Record:
        return self.put_record(result_record(scenario, result))

    def put_failure(self, scenario: Scenario, error: str, traceback_text: str) -> Record:
        return self.put_record(failure_record(scenario, error, traceback_text))

    def put_record(self, data: dict[str, Any]) -> Record:
        """Write a record made by ``result_record`` / ``failure_record`` (perhaps on another machine)."""
        scenario = Scenario.from_dict(data["scenario"])
        if data.get("key") != scenario_key(scenario):
            raise ValueError(
                f"record key {data.get('key')!r} does not match its scenario (another results version, or plugin code?)"
            )
        atomic_write_json(self.path(data["key"]), data)
        return Record(data["key"], str(data["status"]), data)

    def records(self) -> list[Record]:
        """Every parseable record of this results version in the store, sorted by key.

        Records made by code of another :data:`RESULTS_VERSION` are left out (their scenario hashes to another key)
        and counted in ``stale``: their numbers are not comparable with current ones.
        """
        out = []
        self.stale = 0
        for _, record, state in self._scan():
            if state == CURRENT and record is not None:
                out.append(record)
            elif state == STALE:
                self.stale += 1
        return out

    def records_of(self, scenarios: Iterable[Scenario] | Mapping[str, Scenario] | None) -> list[Record]:
        """The records of ``scenarios`` (every record when None), sorted by key, with a :func:`missing_record` for
        each scenario the store does not hold. A mapping is taken as already keyed (:func:`by_key`)."""
        if scenarios is None:
            return self.records()
        wanted = scenarios if isinstance(scenarios, Mapping) else by_key(scenarios)
        # only the wanted files: a store shared by several suites (the quick one's 192 runs beside the full one's
        # 36,000) is not read whole for one suite's tables
        return [self._read(key, s) or missing_record(s) for key, s in sorted(wanted.items())]

    def prune(self, dry_run: bool = False) -> list[Path]:
        """Delete stale records (another results version or plugin code), unparseable ones, and their logs;
        return the paths.

        Records of this version are kept, so the tables do not change; so are logs of runs still in flight,
        which have no record yet, and records naming plugins this process has not loaded (counted in
        ``unjudged``): whether they are stale cannot be told without them. Nothing is deleted with ``dry_run``;
        the paths that would be are returned.
        """
        doomed = [path for path, _, state in self._scan() if state in (STALE, UNREADABLE)]
        doomed += [log for path in doomed if (log := self.root / "logs" / f"{path.stem}.log").is_file()]
        if not dry_run:
            for path in doomed:
                try:
                    path.unlink(missing_ok=True)  # another process may be pruning the same store
                except OSError as exc:
                    raise ConfigError(f"cannot delete {str(path)!r} from the result store: {exc}") from exc
        return doomed

    def _scan(self) -> Iterator[tuple[Path, Record | None, str]]:
        """``(path, record, state)`` per ``*.json`` file, sorted. ``state``: :data:`CURRENT` (a record of this results
        version), :data:`STALE`, :data:`UNREADABLE` (``record`` is None; noted in ``corrupted``) or
        :data:`UNJUDGED` (names a plugin not loaded here; counted in ``unjudged_records`` and per plugin in
        ``unjudged``)."""
        self.unjudged, self.unjudged_records = {}, 0
        for path in sorted(self.root.glob("*.json")):
            try:
                record = _parse_record(path.read_text())
            except (ValueError, KeyError, TypeError) as exc:
                self.corrupted.append(f"{path.name}: {exc}")
                yield path, None, UNREADABLE
                continue
            data = record.data
            unregistered = unregistered_plugins(data.get("scenario"))
            for plugin in unregistered:
                self.unjudged[plugin] = self.unjudged.get(plugin, 0) + 1
            if unregistered:
                self.unjudged_records += 1
                yield path, record, UNJUDGED
                continue
            try:
                current = scenario_key(Scenario.from_dict(data["scenario"])) == record.key
            except (ConfigError, ValueError, KeyError, TypeError):  # a scenario format this version no longer reads
                current = False
            yield path, record, CURRENT if current else STALE
