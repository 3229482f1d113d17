"""What the driver says about trials that failed for good: the cause, once, and whether --resume helps.

Tune hands the driver each failed trial's exception: a RayTaskError wrapping what the trial raised
(its text is the worker's whole traceback), or an error saying the trial's process or node died.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrialFailure:
    """A trial that failed every retry, as the user needs to see it."""
    trial: str
    cause: str  # "Type: message": the last line of the worker's traceback
    log: str  # the file holding the whole traceback
    resumable: bool  # a lost process or a full disk; an exception the trial raised would repeat on --resume

    def __str__(self) -> str:
        return f"{self.trial}: {self.cause} (full log: {self.log})"


def failure_of(name: str, error: Exception, trial_dir: str) -> TrialFailure:
    """What Tune reports for a failed trial, reduced to its cause."""
    from ray.exceptions import RayTaskError

    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, RayTaskError):  # the trial raised: its traceback ends with "Type: message"
        cause, resumable = (lines[-1] if lines else type(error.cause).__name__), isinstance(error.cause, OSError)
    else:  # its process or node died
        cause, resumable = f"{type(error).__name__}: {lines[0] if lines else 'the trial process died'}", True
    return TrialFailure(name, cause, str(Path(trial_dir) / "error.txt"), resumable)


DISK_FULL = "trainers.checkpoint.DiskFullError"  # how a trial's full disk reads in its traceback


def next_step(failures: list[TrialFailure], command: str) -> str:
    """What to do about unfinished trials: --resume finishes interrupted ones, not ones that raised."""
    if any(not failure.resumable for failure in failures):
        return "fix the cause above and run again (--resume would fail the same way)"
    return resume_command(command)


def resume_command(command: str) -> str:
    return f"continue with: {command}" + ("" if " --resume" in command else " --resume")
