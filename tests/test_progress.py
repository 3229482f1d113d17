from types import SimpleNamespace

from study import progress
from study.progress import StudyProgress, clock, progress_line


def test_progress_line_by_hand():
    # 10 of 40 epochs in 60 s: 30 to go at 6 s each is 180 s.
    line = progress_line(done=1, running=2, pending=5, epochs_done=10, epochs_total=40, elapsed_s=60.0)
    assert line == ("progress: 1 of 8 trials done, 2 running, 5 pending; epochs 10 of 40; 1m 00s elapsed, "
                    "about 3m 00s left")


def test_no_estimate_before_the_first_epoch_or_after_the_last():
    assert "left" not in progress_line(0, 2, 6, 0, 40, 5.0)
    assert progress_line(8, 0, 0, 40, 40, 3725.0).endswith("1h 02m elapsed")


def test_clock():
    assert [clock(s) for s in (0, 59.6, 61, 3600, 7322)] == ["0m 00s", "1m 00s", "1m 01s", "1h 00m", "2h 02m"]


def test_study_progress_counts_ended_trials_and_epochs_and_prints_at_most_every_every_s(monkeypatch, capsys):
    now = [0.0]
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: now[0]))
    a, b, c = (SimpleNamespace(trial_id=name, status=status) for name, status in
               (("a", "RUNNING"), ("b", "RUNNING"), ("c", "PENDING")))
    trials = [a, b, c]
    callback = StudyProgress(trials_total=3, epochs_total=12, every_s=30)

    def at(seconds, event, trial):
        now[0] = seconds
        if event == "result":
            callback.on_trial_result(0, trials, trial, {})
        else:
            getattr(callback, f"on_trial_{event}")(0, trials, trial)
        return capsys.readouterr().out

    assert at(10, "result", a) == at(20, "result", b) == ""  # within 30 s of the start
    assert at(30, "result", a) == ("progress: 0 of 3 trials done, 2 running, 1 pending; epochs 3 of 12; 0m 30s "
                                   "elapsed, about 1m 30s left\n")
    assert at(40, "result", a) == ""  # 10 s after the last line
    # Tune calls these before it marks the trial terminated: still RUNNING, yet ended, and no epoch of its own.
    assert at(45, "complete", a) == ("progress: 1 of 3 trials done, 1 running, 1 pending; epochs 4 of 12; 0m 45s "
                                     "elapsed, about 1m 30s left\n")
    assert at(60, "error", b) == ("progress: 2 of 3 trials done, 0 running, 1 pending; epochs 4 of 12; 1m 00s elapsed, "
                                  "about 2m 00s left\n")
