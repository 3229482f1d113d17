"""Fault tests with real processes on loopback: crashed trials, an interrupted or killed driver,
and a Ray cluster that loses a worker node. After each, every trial x epoch row is present
exactly once, and the metrics are those of an uninterrupted run of the same config and seed."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import torch

from catalogue import STUDIES
from study import outputs
from study.profiles import PROFILES
from study.trials import expand
from trainers.config import parse_assignment
from trainers.fit import fit

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ["--set", "dataset=synthetic", "--set", "image_size=16", "--set", "clusters_per_class=2",
             "--set", "min_cluster_size=5", "--set", "batch_size=64"]


def planned(study: str, seeds: int, epochs: int):
    overrides = {**dict(parse_assignment(a) for a in SYNTHETIC[1::2]), "epochs": epochs}
    return expand(STUDIES[study], PROFILES["tiny"], seeds, overrides)


def study_command(*args):
    return [sys.executable, "-m", "study.run", *args]


def assert_every_row_once(out: Path, trials) -> pd.DataFrame:
    table = pd.read_parquet(out / "trials.parquet")
    expected = {(t.config.config_hash(), epoch) for t in trials for epoch in range(t.config.epochs + 1)}
    found = list(zip(table["config_hash"], table["epoch"]))
    print(f"rows expected {len(expected)}, found {len(found)}, duplicates {len(found) - len(set(found))}, "
          f"missing {len(expected - set(found))}")
    assert len(found) == len(expected) and set(found) == expected, (len(found), len(expected))
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    for column in ("config_hash", "seed", "code_version", "hostname", "torch_version", "ray_version"):
        assert table[column].notna().all(), column
    return table


def assert_same_as_uninterrupted(table: pd.DataFrame, trial) -> None:
    direct = fit(trial.config)
    rows = table[table["config_hash"] == trial.config.config_hash()].sort_values("epoch")
    # Series.equals counts NaN (an epoch eval_every skipped) as equal to NaN.
    assert rows["knn_top1"].reset_index(drop=True).equals(pd.Series([row["knn_top1"] for row in direct]))
    assert rows["loss"].tolist()[1:] == [row["loss"] for row in direct[1:]]


def saved_epoch(out: Path, trial) -> int:
    """The trial's last saved epoch, read from the run folder that run.json names; -1 if none yet."""
    try:
        run_folder = json.loads((out / "run.json").read_text())["run_folder"]
        path = outputs.trial_state(run_folder, trial).path
        return torch.load(path, map_location="cpu", weights_only=False)["epoch"] if path.exists() else -1
    except (OSError, ValueError, KeyError, RuntimeError, EOFError):  # not written yet, or mid-replace
        return -1


def wait_for(condition, process, timeout=240):
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, "the study ended before the fault could be injected"
        assert time.time() < deadline, "timed out waiting for the study to progress"
        time.sleep(0.2)


def test_crashed_trials_retry_from_their_last_epoch(tmp_path):
    out = tmp_path / "labels"
    trials = planned("labels", seeds=1, epochs=3)
    result = subprocess.run(study_command("labels", "--seeds", "1", "--epochs", "3", *SYNTHETIC, "--inject-crash",
                                          "2", "--out", str(out), "--storage", str(tmp_path / "runs")),
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("injected crash at epoch 2") == 2  # each trial died once ...
    assert result.stdout.count("resuming after epoch 1") == 2  # ... and continued from its last saved epoch
    run_folder = json.loads((out / "run.json").read_text())["run_folder"]
    for trial in trials:
        assert (outputs.trial_state(run_folder, trial).path.parent / "crash-injected").exists()
    table = assert_every_row_once(out, trials)
    assert_same_as_uninterrupted(table, trials[1])


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_driver_resumes_without_losing_or_repeating_rows(tmp_path, stop, short_temporary_environment):
    out, storage = tmp_path / "labels", tmp_path / "runs"
    args = ["labels", "--seeds", "2", "--epochs", "4", "--max-concurrent", "1", *SYNTHETIC, "--out", str(out),
            "--storage", str(storage)]
    trials = planned("labels", seeds=2, epochs=4)
    # Killed below: the W&B folders it may leave are in the test's own temporary folder.
    driver = subprocess.Popen(study_command(*args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, env=short_temporary_environment)
    try:
        # Stop mid-way through the second trial, so one trial is finished and one half done.
        wait_for(lambda: saved_epoch(out, trials[1]) >= 1, driver)
        os.kill(driver.pid, stop)
        driver.wait(timeout=120)
    finally:
        if stop == signal.SIGKILL:  # the driver's own Ray processes go down with it, as on a lost machine
            time.sleep(2)
            try:
                os.killpg(driver.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert driver.returncode != 0
    assert json.loads((out / "run.json").read_text())["status"] != "finished"
    run_folder = json.loads((out / "run.json").read_text())["run_folder"]
    finished_state = outputs.trial_state(run_folder, trials[0]).path
    finished_before = finished_state.stat().st_mtime_ns
    # The second trial may also finish while a SIGINT'd driver winds down (a few seconds on a fast CPU).
    finished = len(trials) - len(outputs.unfinished(trials, Path(run_folder)))
    assert 1 <= finished < len(trials)

    refused = subprocess.run(study_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "add --resume" in refused.stderr

    resumed = subprocess.run(study_command(*args, "--resume"), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"{finished} of 4 trials already finished" in resumed.stdout
    assert finished_state.stat().st_mtime_ns == finished_before  # the finished trial did not run again
    table = assert_every_row_once(out, trials)
    assert_same_as_uninterrupted(table, trials[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_node(process: subprocess.Popen, abruptly: bool = False) -> None:
    """`ray start --block` stops its node's processes on SIGTERM; SIGKILL to its group finishes the job.

    Abruptly: SIGKILL at once, as when a machine is pre-empted.
    """
    if process.poll() is None and not abruptly:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def alive_nodes(dashboard: str) -> int:
    with urllib.request.urlopen(f"{dashboard}/nodes?view=summary", timeout=5) as response:
        nodes = json.loads(response.read())["data"]["summary"]
    return sum(1 for node in nodes if node.get("raylet", {}).get("state") == "ALIVE")


def test_cluster_loses_a_worker_node_and_the_study_completes_on_the_head(tmp_path):
    ray_cli = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    # Token auth off on loopback; a private temp dir so no other Ray user on this machine joins this cluster.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    # Each node its own temp dir, as on separate machines: a stopping node deletes the files under its own.
    head_dir, worker_dir = (tempfile.mkdtemp(prefix=f"ray-{name}-", dir="/tmp") for name in ("head", "worker"))
    gcs_port, client_port, dashboard_port = free_port(), free_port(), free_port()
    # Free ports for everything Ray would otherwise put on a fixed default (8265, 52365), which another
    # Ray instance on this machine may hold; each node needs its own agent ports.
    def node(temp_dir):
        return ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", "80000000",
                "--temp-dir", temp_dir, "--dashboard-agent-listen-port", str(free_port()),
                "--dashboard-agent-grpc-port", str(free_port()), "--disable-usage-stats", "--block"]

    head = subprocess.Popen([ray_cli, "start", "--head", "--port", str(gcs_port), "--ray-client-server-port",
                             str(client_port), "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(dashboard_port), *node(head_dir)], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    try:
        def nodes_up(count):
            try:
                return alive_nodes(dashboard) == count
            except OSError:
                return False

        wait_for(lambda: nodes_up(1), head, timeout=120)
        worker = subprocess.Popen([ray_cli, "start", "--address", f"127.0.0.1:{gcs_port}", *node(worker_dir)], env=env,
                                  start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: nodes_up(2), worker, timeout=120)

        out = tmp_path / "labels"
        # 200 epochs of the synthetic set take a trial about 15 s: the worker is stopped while its trial runs.
        # With 20 (under 2 s a trial on a fast core) its trial could finish first, and nothing failed.
        trials = planned("labels", seeds=1, epochs=200)
        job = subprocess.Popen([sys.executable, "-m", "study.submit", "--address", dashboard, "--python",
                                sys.executable, "labels", "--seeds", "1", "--epochs", "200", *SYNTHETIC, "--out",
                                str(out), "--storage", str(tmp_path / "runs")], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # One CPU per node and one per trial: with both trials under way, one of them is on the worker.
        try:
            wait_for(lambda: all(saved_epoch(out, t) >= 1 for t in trials), job)
        except AssertionError as error:
            raise AssertionError(f"{error}; the job printed:\n{job.communicate()[0][-4000:]}") from None
        stop_node(worker, abruptly=True)
        output, _ = job.communicate(timeout=600)
        assert job.returncode == 0, output[-4000:]
        assert "SUCCEEDED" in output
        assert list((tmp_path / "runs").rglob("error.txt"))  # Tune recorded the failure of the worker's trial ...
        assert "resuming after epoch" in output  # ... and its retry continued from its state, not from scratch
        assert_every_row_once(out, trials)
    finally:
        if worker is not None:
            stop_node(worker)
        stop_node(head)
        for folder in (head_dir, worker_dir):
            shutil.rmtree(folder, ignore_errors=True)


def fill(folder: Path) -> Path:
    """Write zeros into folder until its disk is full; returns the file, to free the space again."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 2 ** 20)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_stops_the_run_in_one_line_and_resume_completes_it(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out, storage = tmp_path / "labels", disk / "runs"
        args = ["labels", "--seeds", "1", "--epochs", "3", "--max-concurrent", "1", "--max-failures", "1", *SYNTHETIC,
                "--out", str(out), "--storage", str(storage)]
        trials = planned("labels", seeds=1, epochs=3)
        driver = subprocess.Popen(study_command(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        wait_for(lambda: saved_epoch(out, trials[0]) >= 0, driver)
        filler = fill(disk)  # the disk fills up mid-run, after the first trial saved its epoch 0
        _, stderr = driver.communicate(timeout=600)
        assert driver.returncode == 1, stderr[-3000:]
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and f"no space left in {storage}" in errors[0], stderr[-3000:]
        print(errors[0])
        assert " MB" in errors[0] and "--resume" in errors[0]
        assert json.loads((out / "run.json").read_text())["status"] != "finished"

        filler.unlink()
        resumed = subprocess.run(study_command(*args, "--resume"), cwd=ROOT, capture_output=True, text=True,
                                 timeout=600)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        table = assert_every_row_once(out, trials)
        assert_same_as_uninterrupted(table, trials[0])
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], capture_output=True)


def test_two_drivers_started_together_into_one_folder_one_runs_the_other_is_refused(tmp_path):
    from race_two_drivers import attempt  # the same attempt that `python tests/race_two_drivers.py 20` repeats

    assert attempt(tmp_path) == ""
