"""Re-key stored results to the current config hashes: `python -m study.rehash FOLDER [FOLDER ...]`.

A config hash names the experiment (trainers.config). When the hash's definition changes but a
study's configurations do not, the stored rows still describe the same trials under old names, and
`study.run` refuses their folder as "a different configuration". This maps each row to its trial
in today's plan of the study (the study, scale and seeds the rows record, the profile's epochs),
replaces the config_hash column, and writes the tables back; configs.json is re-keyed, each trial's
stored keys kept and keys added since filled with today's defaults. Metrics and code_version are left
as they are: the rows still say which code made them. A folder whose trials do not match today's plan
one to one, or that holds an unfinished run (its trial states are named by the old hashes: finish it
with --resume first), is refused, and nothing is written. A finished run's run.json is re-keyed too.

A positive-control folder (study.measure.positive_control: trials/HASH.json and search.csv) is
re-keyed from the config each trial record stores: the record is renamed to that config's hash
today, and search.csv's config_hash column follows.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd

from catalogue import STUDIES
from study import files, outputs
from study.cli import OneLineParser
from study.profiles import PROFILES
from study.trials import expand
from trainers.config import ConfigError, TrialConfig


def rehash(folder: Path) -> int:
    """Rewrite the folder's tables with today's hashes; returns the number of trials re-keyed."""
    path = folder / f"{outputs.RESULT_TABLE}.parquet"
    if not path.exists() and (folder / "search.csv").is_file():
        return rehash_trial_records(folder)
    if not path.exists():
        raise ConfigError(f"no results table at {path}; give a folder that study.run wrote")
    table = outputs.read_table(path)
    study, scale = table["study"].iloc[0], table["scale"].iloc[0]
    trials = expand(STUDIES[study], PROFILES[scale], int(table["seed"].max()) + 1)
    if table["epoch"].max() != trials[0].config.epochs:
        raise ConfigError(f"{path} holds {table['epoch'].max()} epochs, the {scale} profile {trials[0].config.epochs}; "
                          f"its trials are not today's plan")
    new_hash = {(t.value, t.seed): t.config.config_hash() for t in trials}
    stored = table.groupby(["value", "seed"])["config_hash"].nunique()
    if set(stored.index) != set(new_hash) or (stored != 1).any():
        raise ConfigError(f"{path} holds trials {sorted(stored.index)}, today's plan {sorted(new_hash)}; "
                          f"rerun the study instead")
    manifest = outputs.Manifest.load(folder)
    if manifest is not None and manifest.status != "finished":
        raise ConfigError(f"{folder} holds an unfinished run; finish it with `python -m study.run {study} --resume "
                          f"--out {folder}` before re-keying")
    renamed = {old: new_hash[(value, seed)] for old, value, seed in zip(table["config_hash"], table["value"], table["seed"])}
    if (folder / "configs.json").is_file():
        fix = "remove it or rerun the study"
        try:
            stored_configs = json.loads((folder / "configs.json").read_text())
        except ValueError as error:
            raise ConfigError(f"{folder / 'configs.json'} is unreadable ({error}); {fix}") from None
        if not isinstance(stored_configs, dict) or not all(isinstance(c, dict) for c in stored_configs.values()):
            raise ConfigError(f"{folder / 'configs.json'} is not a map of config hashes; {fix}")
        old_of = dict(zip(zip(table["value"], table["seed"]), table["config_hash"]))
        configs = {}
        for trial in trials:
            # An interrupted earlier re-keying may have written this file already, under today's hashes.
            stored = stored_configs.get(old_of[(trial.value, trial.seed)]) or stored_configs.get(new_hash[
                (trial.value, trial.seed)], {})
            kept = {key: value for key, value in stored.items() if key != "trial"}
            configs[trial.config.config_hash()] = {"trial": outputs.trial_name(trial), **trial.config.to_dict(), **kept}
        files.replace_file(folder / "configs.json", json.dumps(configs, indent=1))
    table["config_hash"] = table["config_hash"].map(renamed)
    outputs.write_table(table, folder)
    if manifest is not None:
        manifest.config_hashes = [t.config.config_hash() for t in trials]
        manifest.save(folder)
    return len(new_hash)


def rehash_trial_records(folder: Path) -> int:
    """Rename a positive-control folder's trial records to today's hashes of their stored configs and
    rewrite search.csv to match; returns the number of trials. Nothing is written if one is refused.
    The new records are written before search.csv and the old ones removed after it, so a run
    interrupted anywhere is finished by running it again."""
    renamed = {}
    for record in sorted((folder / "trials").glob("*.json")):
        if not re.fullmatch("[0-9a-f]{12}", record.stem):  # e.g. HASH.partial.json, a trial still running
            continue
        try:
            config = json.loads(record.read_text())["config"]
            renamed[record.stem] = TrialConfig.create(**config).config_hash()
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{record} is not a trial record with a valid config ({error})") from None
    moved = {old: new for old, new in renamed.items() if old != new}
    for old, new in moved.items():
        # The same record under both names is what an interrupted re-keying leaves; anything else is two trials.
        target = folder / "trials" / f"{new}.json"
        if list(moved.values()).count(new) > 1 or (
                target.exists() and target.read_bytes() != (folder / "trials" / f"{old}.json").read_bytes()):
            raise ConfigError(f"two different trial records in {folder / 'trials'} hold the config {new} "
                              f"({old}.json and another); remove one")
    try:
        search = pd.read_csv(folder / "search.csv", dtype={"config_hash": str})
        if "config_hash" not in search:
            raise ValueError("no config_hash column")
    except ValueError as error:
        raise ConfigError(f"{folder / 'search.csv'} is not a positive-control search table ({error}); "
                          f"rerun study.measure.positive_control") from None
    missing = sorted(str(name) for name in set(search["config_hash"]) - set(renamed))
    if missing:
        raise ConfigError(f"{folder / 'search.csv'} names trials without a record in {folder / 'trials'}: "
                          f"{', '.join(missing)}")
    for old, new in moved.items():
        files.replace_file(folder / "trials" / f"{new}.json", (folder / "trials" / f"{old}.json").read_bytes())
    search["config_hash"] = search["config_hash"].map(renamed)
    files.replace_file(folder / "search.csv", search.to_csv(index=False))
    for old in moved:
        (folder / "trials" / f"{old}.json").unlink()
    return len(set(renamed.values()))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m study.rehash", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, metavar="FOLDER", help="result folders to re-key")
    folders = parser.parse_args(argv).folders
    if not folders:
        print("error: give result folders, e.g. python -m study.rehash results/tiny/sampling", file=sys.stderr)
        return 2
    try:
        for folder in folders:
            print(f"{folder}: {rehash(folder)} trials re-keyed to today's config hashes")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
