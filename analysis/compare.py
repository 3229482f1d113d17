"""What a run found, and how two runs of the same trials differ.

    python -m analysis.compare A B                # the largest differences between two run folders
    python -m analysis.compare --summary DIR [--against REF]

`A B`: the rows the two folders share (same config hash and epoch) are compared metric by metric; the
largest absolute difference of each is printed with the trial it comes from, and the trials only one
folder holds are counted. Same code, seed and machine give 0 everywhere; another CPU moves the last
digits and, over a run, whole points (docs/reproducibility.md).

`--summary DIR`: the end of a study's run (study.run prints it): per arm, the mean of the study's
metric at the last epoch with its 95% interval over seeds; each of the study's claims judged on these
rows alone; and, with `--against REF` (the committed results of the same study), the comparison above.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from analysis.claims import evaluate_claims
from analysis.results import ResultsError, final_epoch, load_trials, summarize
from catalogue import CLAIMS, study_spec
from study.cli import OneLineParser

COMPARED = ("knn_top1", "svm_map", "linear_top1", "loss")


def largest_differences(first: pd.DataFrame, second: pd.DataFrame) -> tuple[list[str], int, int]:
    """(a line per metric with its largest difference over shared rows, rows shared, trials in one only)."""
    keys = ["config_hash", "epoch"]
    shared = first.merge(second, on=keys, suffixes=("_a", "_b"))
    only = len(set(first["config_hash"]) ^ set(second["config_hash"]))
    lines = []
    for metric in COMPARED:
        if f"{metric}_a" not in shared.columns or f"{metric}_b" not in shared.columns:
            continue
        difference = (shared[f"{metric}_a"] - shared[f"{metric}_b"]).abs()
        if difference.notna().any():
            at = shared.loc[difference.idxmax()]
            lines.append(f"  {metric:<12} largest difference {difference.max():.4g} (trial {at['config_hash']}, "
                         f"epoch {int(at['epoch'])})")
        else:
            lines.append(f"  {metric:<12} never measured in both")
    return lines, len(shared), only


def compare(first_folder: Path, second_folder: Path) -> list[str]:
    first, second = load_trials(first_folder), load_trials(second_folder)
    lines, shared, only = largest_differences(first, second)
    if not shared:
        return [f"{first_folder} and {second_folder} share no trial x epoch row (different configurations)"]
    return [f"{shared} trial x epoch rows in both ({only} trials in only one):", *lines]


def summary(folder: Path, against: Path | None = None) -> list[str]:
    table = load_trials(folder)
    study = str(table["study"].iloc[0])
    spec = study_spec(study, folder)
    metric = spec.metric
    lines = [f"{study}: final {metric} per {spec.factor} (mean and 95% interval over seeds)"]
    last = final_epoch(table)
    for row in summarize(last, metric, ["value"]).itertuples():
        interval = (f"[{row.ci_low:.2f}, {row.ci_high:.2f}]" if math.isfinite(row.ci_low) else "(one seed)")
        lines.append(f"  {row.value!s:<18} {row.mean:7.2f} {interval}  {row.seeds} seed(s)")
    claims = [claim for claim in CLAIMS if any(part.study == study for part in claim.comparisons)]
    verdicts = evaluate_claims({study: table}, claims) if claims else pd.DataFrame({"claim": []})
    for number, part in verdicts.groupby("claim", sort=False):
        lines.append(f"claim {number} on these rows: {part['claim_verdict'].iloc[0]} "
                     f"({'; '.join(f'{r.comparison}: {r.verdict}' for r in part.itertuples())})")
    if against is not None and (against / "trials.parquet").exists() and against.resolve() != folder.resolve():
        lines += [f"against {against}:", *compare(folder, against)]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m analysis.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="two run folders to compare")
    parser.add_argument("--summary", type=Path, metavar="DIR", help="what the run in DIR found")
    parser.add_argument("--against", type=Path, metavar="REF", help="with --summary: compare with this folder too")
    args = parser.parse_args(argv)
    try:
        if args.summary is not None and not args.folders:
            lines = summary(args.summary, args.against)
        elif len(args.folders) == 2 and args.summary is None:
            lines = compare(*args.folders)
        else:
            print("error: give two run folders, or --summary DIR", file=sys.stderr)
            return 2
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
