"""InterCLR Table 4 replica: time per iteration and per epoch, and peak memory, of Intra,
Intra+Inter (offline labels) and Intra+Inter (online labels), measured in one run on one machine.

`python -m study.measure.table4 [--scale tiny] [--epochs 3] [--rounds 2] [--set KEY=VALUE ...]`

Each variant trains in its own process (`python -m trainers.fit`), so its peak memory is its own;
rounds alternate between the variants (A B C A B C) so drift in the machine's speed hits all
alike. Epoch time counts training and, for offline labels, re-extracting every feature and
rerunning k-means; evaluation is excluded. Writes results/<scale>/table4/.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from study import files
from study.cli import OneLineParser
from study.profiles import PROFILES
from trainers.config import ConfigError, TrialConfig, parse_assignment

VARIANTS = {  # paper Table 4 (8 V100, 200 epochs): days and GB per GPU
    "Intra": ({"loss_lambda": 1.0}, 2.6, 5.6),
    "Intra+Inter (offline)": ({"loss_lambda": 0.75, "negative_sampling": "semi-hard", "label_mode": "offline",
                               "offline_every": 1}, 6.4, 6.1),
    "Intra+Inter (online)": ({"loss_lambda": 0.75, "negative_sampling": "semi-hard", "label_mode": "online"}, 5.0, 6.2),
}


def run_variant(config: TrialConfig) -> dict:
    """Train one variant in a child process; its mean step and epoch times and its peak memory."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rows.json"
        command = [sys.executable, "-m", "trainers.fit", "--json-out", str(out),
                   *[arg for key, value in config.to_dict().items() for arg in ("--set", f"{key}={value}")]]
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        if status != 0:
            raise RuntimeError(f"{shlex.join(command)} exited with status {status}")
        rows = [r for r in json.loads(out.read_text())["rows"] if r["epoch"] >= 1]
    gpu_peak = max(r["peak_memory_mb"] for r in rows) if config.device == "cuda" else None
    return {"iter_time_s": sum(r["iter_time_s"] for r in rows) / len(rows),
            "epoch_time_s": sum(r["epoch_time_s"] for r in rows) / len(rows),
            # ru_maxrss is in KiB on Linux: the child's own peak resident memory.
            "peak_memory_mb": gpu_peak if gpu_peak is not None else usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m study.measure.table4", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="tiny", choices=list(PROFILES))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="output folder (default results/<scale>/table4)")
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_assignment(text) for text in args.set)
        base = PROFILES[args.scale].config(**{"epochs": args.epochs, **overrides})
        configs = {name: base.replace(**changes) for name, (changes, _, _) in VARIANTS.items()}
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    measurements = []
    for round_index in range(args.rounds):
        for name, config in configs.items():
            print(f"round {round_index + 1}/{args.rounds}: {name}", flush=True)
            measurements.append({"variant": name, "round": round_index, **run_variant(config)})
    table = pd.DataFrame(measurements).groupby("variant", sort=False).median(numeric_only=True)
    table = table.drop(columns="round").reindex(list(VARIANTS))
    intra = table.loc["Intra"]
    for column, ratio in (("iter_time_s", "step_ratio"), ("epoch_time_s", "epoch_ratio"),
                          ("peak_memory_mb", "memory_ratio")):
        table[ratio] = table[column] / intra[column]
    table["paper_days"] = [days for _, days, _ in VARIANTS.values()]
    table["paper_time_ratio"] = table["paper_days"] / VARIANTS["Intra"][1]
    table["paper_memory_gb"] = [memory for _, _, memory in VARIANTS.values()]

    out = Path(args.out or Path("results") / args.scale / "table4")
    out.mkdir(parents=True, exist_ok=True)
    files.replace_file(out / "table4.csv", table.to_csv())
    command = "python -m study.measure.table4 " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    markdown = [f"# InterCLR Table 4 replica at scale `{args.scale}`", "",
                f"`{command}`: {args.epochs} epochs per variant, median of {args.rounds} alternating rounds, "
                f"device {base.device}, {platform.processor() or platform.machine()}. Epoch time = training "
                "(+ offline relabelling), no evaluation. Memory: peak GPU allocation on CUDA, else the "
                "process's peak resident memory.", "",
                "| variant | step (ms) | epoch (s) | peak memory (MB) | step ratio | epoch ratio | memory ratio "
                "| paper days | paper time ratio | paper GB/GPU |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in table.iterrows():
        markdown.append(f"| {name} | {row.iter_time_s * 1000:.1f} | {row.epoch_time_s:.2f} | {row.peak_memory_mb:.0f} "
                        f"| {row.step_ratio:.2f}x | {row.epoch_ratio:.2f}x | {row.memory_ratio:.2f}x "
                        f"| {row.paper_days} | {row.paper_time_ratio:.2f}x | {row.paper_memory_gb} |")
    files.replace_file(out / "table4.md", "\n".join(markdown) + "\n")
    print("\n".join(markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
