"""One line on a whole study's progress, printed by the driver as its trials report:

    progress: 4 of 18 trials done, 2 running, 12 pending; epochs 81 of 342; 6m 12s elapsed, about 20m 0s left

The estimate of the time left divides the epochs still to run by the rate at which this run has
finished epochs so far (all trials together, so it accounts for how many run at once). Each trial
also prints its own per-epoch line; this is the line to watch on a long study or a cluster job
(`study.submit` follows the driver's output, so it shows there too).
"""

from __future__ import annotations

import time

from ray.tune import Callback


def progress_line(done: int, running: int, pending: int, epochs_done: int, epochs_total: int,
                  elapsed_s: float) -> str:
    trials = done + running + pending
    line = (f"progress: {done} of {trials} trials done, {running} running, {pending} pending; "
            f"epochs {epochs_done} of {epochs_total}; {clock(elapsed_s)} elapsed")
    if 0 < epochs_done < epochs_total:
        line += f", about {clock((epochs_total - epochs_done) * elapsed_s / epochs_done)} left"
    return line


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


class StudyProgress(Callback):
    """Prints `progress_line` when a trial ends, and otherwise at most every `every_s` seconds.

    trials_total: the trials this run launches (Tune may create them lazily); epochs_total: the
    evaluated epochs they still have to report, epoch 0 included."""

    def __init__(self, trials_total: int, epochs_total: int, every_s: float = 30.0):
        self.trials_total, self.epochs_total, self.every_s = trials_total, epochs_total, every_s
        self.epochs_done = 0
        self.ended: set[str] = set()  # Tune calls on_trial_complete before it marks the trial terminated
        self.started = self.printed = time.monotonic()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.epochs_done += 1
        if time.monotonic() - self.printed >= self.every_s:
            self.show(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended.add(trial.trial_id)
        self.show(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ended.add(trial.trial_id)
        self.show(trials)

    def show(self, trials) -> None:
        done = len(self.ended)
        running = sum(t.status == "RUNNING" and t.trial_id not in self.ended for t in trials)
        print(progress_line(done, running, self.trials_total - done - running, self.epochs_done, self.epochs_total,
                            time.monotonic() - self.started), flush=True)
        self.printed = time.monotonic()
