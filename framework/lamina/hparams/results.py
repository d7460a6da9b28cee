"""The trials of a search, kept in its folder as trials.json (everything, for resuming) and
trials.csv (one row per trial, for a spreadsheet), both rewritten atomically after every
trial, so an interrupted search loses nothing it finished; and the best trial as best.toml."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomli_w

from ..files import atomic_write
from ..errors import ConfigError

FORMAT_VERSION = 1
JSON_FILE, CSV_FILE, BEST_FILE = "trials.json", "trials.csv", "best.toml"
OK, FAILED = "ok", "failed"


@dataclass
class TrialRecord:
    """One finished trial: its sampled hyper-parameters and either its score or its error."""

    id: str
    round: int                        # from 1
    index: int                        # within its round, from 0
    params: dict
    status: str                       # OK or FAILED
    score: float | None = None        # the objective, e.g. dev accuracy
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    seconds: float | None = None
    worker: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


def ranked(records, direction: str) -> list[TrialRecord]:
    """The successful trials, best first (`direction` "max" or "min"); ties by trial id."""
    sign = -1 if direction == "max" else 1
    return sorted((r for r in records if r.ok), key=lambda r: (sign * r.score, r.id))


class TrialStore:
    """The records of the search in `out_dir`, with the settings they were made under."""

    def __init__(self, out_dir, settings: dict):
        self.dir = Path(out_dir)
        self.settings = settings
        self.records: dict[str, TrialRecord] = {}
        self.spaces: list[dict] = []

    @classmethod
    def open(cls, out_dir, settings: dict) -> "TrialStore":
        """The store in `out_dir`: the trials already there if it holds this search, else empty.
        A folder holding a search with other settings is refused (resuming it would mix them)."""
        store = cls(out_dir, settings)
        path = store.dir / JSON_FILE
        if not path.is_file():
            return store
        try:
            saved = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path} is corrupted (not valid JSON): {err}; move it away to start afresh") from err
        if not isinstance(saved, dict) or saved.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{path}: unsupported or missing format_version (expected {FORMAT_VERSION})")
        previous = saved.get("search", {})
        differing = [key for key in sorted(set(previous) | set(settings)) if previous.get(key) != settings.get(key)]
        if differing:
            raise ConfigError(f"{store.dir} holds a search with other settings ({', '.join(differing)} differ), "
                              f"so it cannot be resumed with these; use another --out, or the same settings")
        store.records = {r["id"]: TrialRecord(**r) for r in saved.get("trials", [])}
        store.spaces = saved.get("spaces", [])
        return store

    def add(self, record: TrialRecord) -> None:
        self.records[record.id] = record
        self.save()

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        records = sorted(self.records.values(), key=lambda r: r.id)
        payload = {"format_version": FORMAT_VERSION, "search": self.settings, "spaces": self.spaces,
                   "trials": [asdict(r) for r in records]}
        atomic_write(self.dir / JSON_FILE, json.dumps(payload, indent=2))
        atomic_write(self.dir / CSV_FILE, to_csv(records, list(self.settings["space"])))


def to_csv(records, param_names: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "round", "status", "score", *param_names, "seconds", "worker", "error"])
    for r in records:
        writer.writerow([r.id, r.round, r.status, "" if r.score is None else r.score,
                         *(r.params.get(name, "") for name in param_names),
                         "" if r.seconds is None else round(r.seconds, 3), r.worker or "", r.error or ""])
    return out.getvalue()


def write_best(path, recipe, record: TrialRecord, objective: str) -> Path:
    """The best trial's recipe as a complete TOML recipe, `lamina train`-able as it is."""
    from .space import apply_params

    best = apply_params(recipe, record.params)
    best.name = f"{recipe.name}-best"
    shown = ", ".join(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {v!r}" for k, v in record.params.items())
    best.description = (f"{recipe.name} with the best hyper-parameters of a `lamina hparams` search "
                        f"(trial {record.id}, {objective} {record.score:.4f}): {shown}")
    path = Path(path)
    atomic_write(path, tomli_w.dumps(best.to_dict()))
    return path
