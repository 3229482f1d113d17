"""The output folder's lock, and what the driver says about trials that failed for good."""

import json
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from ray.exceptions import RayTaskError, WorkerCrashedError

from study.safety import lock
from study.safety.failures import failure_of, next_step
from trainers.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def hold_lock_in_another_process(out: Path, then_die: bool) -> subprocess.Popen:
    """A process that takes the lock, says so on stdout, then dies at once (SIGKILL) or waits."""
    code = (f"import os, signal, sys, time; from pathlib import Path; from study.safety import lock; "
            f"held = lock.acquire(Path({str(out)!r})); print('locked', flush=True); "
            f"{'os.kill(os.getpid(), signal.SIGKILL)' if then_die else 'time.sleep(60)'}")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder



def test_a_holder_that_has_locked_but_not_yet_written_its_name_is_still_named(tmp_path):
    """The moment between a driver's flock and its write of the holder: the refusal waits for the name."""
    import fcntl
    import threading

    out = tmp_path / "out"
    out.mkdir()
    descriptor = os.open(out / lock.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(descriptor, fcntl.LOCK_EX)  # another open file description: acquire() must not get it
    holder = {"host": "node-7", "pid": 4242, "started": "2026-12-01T20:00:00"}
    writer = threading.Timer(0.2, lambda: os.pwrite(descriptor, json.dumps(holder).encode(), 0))
    writer.start()
    try:
        with pytest.raises(ConfigError, match=r"\(host node-7, pid 4242, started 2026-12-01T20:00:00\)"):
            lock.acquire(out)
    finally:
        writer.join()
        os.close(descriptor)

def test_a_second_holder_is_refused_with_the_first_ones_host_pid_and_start(tmp_path):
    holder = hold_lock_in_another_process(tmp_path / "out", then_die=False)
    try:
        with pytest.raises(ConfigError, match=rf"in use by another study.run \(host .+, pid {holder.pid}, started "):
            lock.acquire(tmp_path / "out")
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over_and_named(tmp_path):
    holder = hold_lock_in_another_process(tmp_path / "out", then_die=True)
    assert holder.wait() == -signal.SIGKILL
    assert (tmp_path / "out" / lock.LOCK_FILE).exists()  # the dead process left its lock file
    taken = lock.acquire(tmp_path / "out")
    assert taken.previous["pid"] == holder.pid
    assert json.loads((tmp_path / "out" / lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    taken.release()
    assert not (tmp_path / "out" / lock.LOCK_FILE).exists()


def test_a_refused_run_leaves_the_folder_as_it_was(tmp_path):
    stale = b'{"host": "h", "pid": 1, "started": "then"}\n'
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / lock.LOCK_FILE).write_bytes(stale)
    lock.acquire(tmp_path / "kept").release(refused=True)
    assert (tmp_path / "kept" / lock.LOCK_FILE).read_bytes() == stale
    lock.acquire(tmp_path / "new" / "deeper").release(refused=True)
    assert not (tmp_path / "new").exists()


def test_after_a_release_the_next_driver_gets_the_lock(tmp_path):
    first = lock.acquire(tmp_path / "out")
    with pytest.raises(ConfigError):  # flock is per open file: this process's second open conflicts too
        lock.acquire(tmp_path / "out")
    first.release()
    lock.acquire(tmp_path / "out").release()


def raised(error: Exception) -> RayTaskError:
    """What Tune hands the driver when a trial raised `error` in its worker."""
    try:
        raise error
    except Exception:
        return RayTaskError("ImplicitFunc.train", traceback.format_exc(), error)


def test_a_raised_error_shows_its_type_and_message_and_is_not_worth_resuming(tmp_path):
    failure = failure_of("hard_seed0_abc", raised(ValueError("This solver needs samples of at least 2 classes")),
                         str(tmp_path))
    assert failure.cause == "ValueError: This solver needs samples of at least 2 classes"
    assert failure.log == str(tmp_path / "error.txt") and not failure.resumable
    assert str(failure) == (f"hard_seed0_abc: ValueError: This solver needs samples of at least 2 classes "
                            f"(full log: {tmp_path / 'error.txt'})")
    assert "--resume would fail the same way" in next_step([failure], "python -m study.run sampling")


def test_a_lost_process_or_a_full_disk_is_worth_resuming(tmp_path):
    crashed = failure_of("t", WorkerCrashedError(), str(tmp_path))
    full = failure_of("t", raised(OSError(28, "No space left on device")), str(tmp_path))
    assert crashed.resumable and crashed.cause.startswith("WorkerCrashedError: ")
    assert full.resumable and full.cause == "OSError: [Errno 28] No space left on device"
    assert next_step([crashed, full], "python -m study.run sampling") == \
        "continue with: python -m study.run sampling --resume"
    assert next_step([], "python -m study.run sampling --resume").endswith("sampling --resume")


def test_a_study_whose_trials_all_failed_for_good_exits_1_says_not_to_resume_and_frees_its_folder(tmp_path,
                                                                                                 monkeypatch, capsys):
    from study import outputs, run

    def every_trial_raises(trials, options, run_folder):  # what Tune reports when each trial raised every retry
        run_folder.mkdir(parents=True)
        return [failure_of(outputs.trial_name(t), raised(ValueError("no")), str(run_folder)) for t in trials]

    monkeypatch.setattr(run, "start_ray", lambda address: None)
    monkeypatch.setattr(run, "run_tune", every_trial_raises)
    monkeypatch.setattr(run, "draw_figures", lambda study, out: [])
    out = tmp_path / "out"
    synthetic = ["dataset=synthetic", "image_size=16", "clusters_per_class=2", "min_cluster_size=5", "batch_size=64"]
    args = ["labels", "--seeds", "1", "--epochs", "1", *(a for s in synthetic for a in ("--set", s)), "--out", str(out),
            "--storage", str(tmp_path / "runs")]
    assert run.main(args) == 1  # labels: online and offline, one seed each
    stderr = capsys.readouterr().err
    assert stderr.count("failed trial ") == 2 and "ValueError: no" in stderr
    assert "2 of 2 trials unfinished; fix the cause above and run again (--resume would fail the same way)" in stderr
    assert not (out / lock.LOCK_FILE).exists()
    lock.acquire(out).release()


def test_a_lock_that_is_a_link_or_a_fifo_is_refused_and_nothing_is_written_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("someone else's file\n" * 500)
    out = tmp_path / "out"
    out.mkdir()
    (out / lock.LOCK_FILE).symlink_to(outside)
    with pytest.raises(ConfigError, match="symbolic link"):
        lock.acquire(out)
    assert outside.read_text() == "someone else's file\n" * 500
    fifo_out = tmp_path / "fifo"
    fifo_out.mkdir()
    os.mkfifo(fifo_out / lock.LOCK_FILE)
    with pytest.raises(ConfigError, match="not a regular file"):
        lock.acquire(fifo_out)


def test_a_release_closes_the_lock_so_the_folder_is_free_again(tmp_path):
    """A refused run restores the stale lock file instead of removing it: only closing its descriptor frees the
    lock for the next driver (flock conflicts between two open files of one process too)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / lock.LOCK_FILE).write_bytes(b'{"host": "h", "pid": 1, "started": "then"}\n')
    refused = lock.acquire(out)
    descriptor = refused.descriptor
    refused.release(refused=True)
    with pytest.raises(OSError):
        os.fstat(descriptor)
    lock.acquire(out).release()


def test_a_lock_file_replaced_between_open_and_flock_is_not_taken(tmp_path, monkeypatch):
    """The holder releases (unlinks the file) after this driver opened it, and a third driver locks the new file
    before this one's flock: the flock on the unlinked file must not count as holding the folder."""
    import fcntl

    out = tmp_path / "out"
    third = []
    flock = fcntl.flock

    def handed_over_first(descriptor, operation):
        if not third:
            third.append(None)
            (out / lock.LOCK_FILE).unlink()
            third[0] = lock.acquire(out)
        return flock(descriptor, operation)

    monkeypatch.setattr(lock.fcntl, "flock", handed_over_first)
    try:
        with pytest.raises(ConfigError, match=rf"in use by another study.run \(host .+, pid {os.getpid()}, "):
            lock.acquire(out)
    finally:
        if third and third[0]:
            third[0].release()


def test_an_output_that_is_a_file_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file\n")
    with pytest.raises(ConfigError, match="is a file; give a folder with --out"):
        lock.acquire(out)
    assert out.read_text() == "a file\n"
