"""Re-key stored results to the current config hashes: `python -m study.rehash FOLDER [FOLDER ...]`.

A config hash names the experiment (trainers.config). When the hash's definition changes but a
study's configurations do not, the stored rows still describe the same trials under old names, and
`study.run` refuses their folder as "a different configuration". This maps each row to its trial
in today's plan of the study (the study, scale and seeds the rows record, the profile's epochs),
replaces the config_hash column, and writes the tables back. Metrics and code_version are left as
they are: the rows still say which code made them. A folder whose trials do not match today's plan
one to one, or that holds an unfinished run (its trial states are named by the old hashes: finish it
with --resume first), is refused, and nothing is written. A finished run's run.json is re-keyed too.
"""

from __future__ import annotations

import sys
from pathlib import Path


from catalogue import STUDIES
from study import outputs
from study.cli import OneLineParser
from study.profiles import PROFILES
from study.trials import expand
from trainers.config import ConfigError


def rehash(folder: Path) -> int:
    """Rewrite the folder's tables with today's hashes; returns the number of trials re-keyed."""
    path = folder / f"{outputs.RESULT_TABLE}.parquet"
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
    table["config_hash"] = table["config_hash"].map(renamed)
    outputs.write_table(table, folder)
    if manifest is not None:
        manifest.config_hashes = [renamed.get(old, old) for old in manifest.config_hashes]
        manifest.save(folder)
    return len(new_hash)


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
