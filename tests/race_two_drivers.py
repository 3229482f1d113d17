"""Start two `study.run` drivers together into one --out, ATTEMPTS times: `python tests/race_two_drivers.py [N]`.

Each attempt passes when one driver exits 0 with every planned row in the folder and the other
exits 2 with one line naming the holder of the lock. A script, not a test: each attempt starts Ray.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
STUDY = ["sampling", "--seeds", "1", "--epochs", "1", "--set", "dataset=synthetic", "--set", "image_size=16",
         "--set", "clusters_per_class=2", "--set", "min_cluster_size=5", "--set", "batch_size=64"]
TRIALS, EPOCHS = 4, 1  # the sampling study's four strategies, one seed


def attempt(folder: Path) -> str:
    """'' when the attempt behaved, else what went wrong."""
    command = [sys.executable, "-m", "study.run", *STUDY, "--out", str(folder / "out"), "--storage",
               str(folder / "runs")]
    drivers = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    results = [(driver.wait(timeout=900), *driver.communicate()) for driver in drivers]
    codes = sorted(code for code, _, _ in results)
    if codes != [0, 2]:
        return f"exit codes {codes}: " + " | ".join(err.strip()[-300:] for _, _, err in results)
    refused = next(err for code, _, err in results if code == 2).strip().splitlines()
    if len(refused) != 1 or "is in use by another study.run" not in refused[0] or "pid" not in refused[0]:
        return f"refusal was not one line naming the holder: {refused}"
    table = pd.read_parquet(folder / "out" / "trials.parquet")
    if len(table) != TRIALS * (EPOCHS + 1) or table[["config_hash", "epoch"]].duplicated().any():
        return f"{len(table)} rows in the table, expected {TRIALS * (EPOCHS + 1)} distinct ones"
    return ""


def main() -> int:
    attempts = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    passed = 0
    for number in range(1, attempts + 1):
        with tempfile.TemporaryDirectory() as folder:
            problem = attempt(Path(folder))
        passed += not problem
        print(f"attempt {number}: {'ok' if not problem else problem}", flush=True)
    print(f"{passed} of {attempts} attempts: one driver ran, the other was refused in one line")
    return 0 if passed == attempts else 1


if __name__ == "__main__":
    sys.exit(main())
