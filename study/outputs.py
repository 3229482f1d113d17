"""What a study's output folder holds, and where its trials keep their state.

An output folder (runs/<scale>/<study> by default; the committed ones under results/) holds the
result table, the figure, RUN.md and
`run.json`: the study, its planned config hashes, the run folder and whether every trial
finished. The run folder (under --storage) holds one state file per trial
(trials/<trial name>/state.pt), which carries all of that trial's rows, and the epoch-0 floors
its trials share (floors/). The result table is assembled from the state files, so a trial
retried after a crash or continued by --resume contributes each epoch exactly once.

Every check here runs before anything is launched, and raises ConfigError naming the fix.
"""

from __future__ import annotations

import datetime
import io
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from study import files
from study.trials import Trial
from trainers.checkpoint import STATE_FILE, TrialState
from trainers.config import ConfigError

MANIFEST = "run.json"
LOCK_FILE = ".lock"  # held by the driver writing the folder (study.safety.lock)
RESULT_TABLE = "trials"


@dataclass
class Manifest:
    study: str
    scale: str
    run_folder: str  # absolute: trials resume from here, possibly on another machine's mount
    config_hashes: list[str]
    status: str  # "running", "unfinished" or "finished"
    command: str
    code_version: str

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        files.replace_file(out / MANIFEST, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, out: Path) -> "Manifest | None":
        path = out / MANIFEST
        if not path.exists():
            return None
        try:
            manifest = cls(**json.loads(path.read_text()))
            well_formed = (all(isinstance(getattr(manifest, key), str) for key in
                               ("study", "scale", "run_folder", "status", "command", "code_version"))
                           and isinstance(manifest.config_hashes, list)
                           and all(isinstance(h, str) for h in manifest.config_hashes))
        except (OSError, ValueError, TypeError) as error:  # a folder, bytes that are not JSON, other keys
            raise ConfigError(f"{path} is unreadable ({type(error).__name__}); delete it, or give --out NEW_DIR") \
                from None
        if not well_formed:
            raise ConfigError(f"{path} is not a run record (a field has the wrong type); delete it, or give "
                              f"--out NEW_DIR")
        return manifest


def trial_name(trial: Trial) -> str:
    return f"{trial.value}_seed{trial.seed}_{trial.config.config_hash()}"


def trial_state(run_folder: str | Path, trial: Trial) -> TrialState:
    return TrialState(Path(run_folder) / "trials" / trial_name(trial))


def floor_cache(run_folder: str | Path) -> Path:
    """Where the run's trials share their epoch-0 metrics (trainers.baseline)."""
    return Path(run_folder) / "floors"


def new_run_folder(storage: str, scale: str, study: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path(storage).resolve() / f"{scale}-{study}-{stamp}"


def check_output(out: Path, trials: list[Trial], resume: bool) -> Manifest | None:
    """Refuse an output folder that holds something this run must not overwrite or mix with.

    Returns the folder's manifest when --resume continues it.
    """
    study = trials[0].study
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} is a file; give a folder with --out")
    manifest = Manifest.load(out) if out.is_dir() else None
    planned = {t.config.config_hash() for t in trials}
    table = out / f"{RESULT_TABLE}.parquet"
    if manifest is not None:
        held_study, held = manifest.study, set(manifest.config_hashes)
    elif table.exists():
        columns = read_table(table, ["study", "config_hash"])
        held_study, held = str(columns["study"].iloc[0]) if len(columns) else study, set(columns["config_hash"])
    elif out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise ConfigError(f"output {out} holds files that are not study results; give an empty or new --out")
    else:
        held_study, held = study, None

    if held_study != study:
        raise ConfigError(f"{out} holds results of study {held_study!r}, not {study!r}; give --out NEW_DIR")
    if held is not None and held != planned:
        raise ConfigError(f"{out} holds results of a different configuration ({len(held - planned)} of its "
                          f"{len(held)} config hashes are not in this plan); give --out NEW_DIR to keep both, "
                          f"or the settings in {out / 'RUN.md'}")
    if resume:
        if manifest is None:
            raise ConfigError(f"nothing to resume in {out}: it has no {MANIFEST}; run without --resume")
        if not Path(manifest.run_folder).is_dir():
            raise ConfigError(f"the run folder {manifest.run_folder} named in {out / MANIFEST} is gone, so the "
                              f"trials cannot continue; run without --resume to start over")
        return manifest
    if manifest is not None and manifest.status != "finished":
        raise ConfigError(f"{out} holds an unfinished run of this study; add --resume to continue it, "
                          f"or give --out NEW_DIR to start over")
    return None


def last_epochs(trials: list[Trial], run_folder: str | Path) -> dict[str, int]:
    """Each trial's last saved epoch (-1: not started); raises CheckpointError for a bad state file."""
    epochs = {}
    for trial in trials:
        state = trial_state(run_folder, trial).load(trial.config.config_hash())
        epochs[trial_name(trial)] = -1 if state is None else state["epoch"]
    return epochs


def unfinished(trials: list[Trial], run_folder: str | Path) -> list[Trial]:
    epochs = last_epochs(trials, run_folder)
    return [t for t in trials if epochs[trial_name(t)] < t.config.epochs]


def free_space(run_folder: str | Path) -> int:
    folder = Path(run_folder)
    while not folder.exists():  # a run folder not made yet: its disk is its nearest existing parent's
        folder = folder.parent
    return shutil.disk_usage(folder).free


def space_needed(run_folder: str | Path, trials: list[Trial]) -> int:
    """About what the trials' next saves take: each writes a state beside its previous one, so the
    largest state in the run folder per trial."""
    sizes = [path.stat().st_size for path in (Path(run_folder) / "trials").glob(f"*/{STATE_FILE}")]
    return max(sizes, default=0) * len(trials)


def space_shortage(run_folder: str | Path, trials: list[Trial]) -> bool:
    """Whether the run folder's disk lacks the space its unfinished trials' next saves need."""
    return bool(trials) and space_needed(run_folder, trials) > free_space(run_folder)


def collect(trials: list[Trial], run_folder: str | Path, provenance: dict) -> tuple[pd.DataFrame, list[Trial]]:
    """One row per (finished trial, epoch), identity and provenance first; and the unfinished trials.

    Reads each state file once."""
    rows, left = [], []
    for trial in trials:
        state = trial_state(run_folder, trial).load(trial.config.config_hash())
        if state is None or state["epoch"] < trial.config.epochs:
            left.append(trial)
            continue
        identity = {**trial.metadata(), **provenance}
        rows += [{**identity, **row} for row in state["rows"]]
    table = pd.DataFrame(rows)
    table = table.sort_values(["value", "seed", "epoch"]).reset_index(drop=True) if rows else table
    return table, left


def read_table(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A results table a folder holds; raises ConfigError (one line) for a damaged or foreign file."""
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as error:  # pyarrow raises several types for a damaged file, KeyError-likes for columns
        raise ConfigError(f"{path} is unreadable ({type(error).__name__}); move it away, or give --out NEW_DIR") \
            from None


def table_files(table: pd.DataFrame) -> dict[str, bytes]:
    """The result table as the files it is stored in: parquet for programs, CSV for people."""
    parquet = io.BytesIO()
    table.to_parquet(parquet, index=False)
    return {f"{RESULT_TABLE}.parquet": parquet.getvalue(), f"{RESULT_TABLE}.csv": table.to_csv(index=False).encode()}


def table_bytes(table: pd.DataFrame) -> int:
    return sum(len(data) for data in table_files(table).values()) if not table.empty else 0


def write_table(table: pd.DataFrame, out: Path) -> None:
    for name, data in table_files(table).items():
        files.replace_file(out / name, data)
