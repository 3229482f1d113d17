"""What keeps a run safe to start, stop and share: the output folder's lock (lock), every check made
before anything is launched or written (preflight), and what a failed trial's error means and which
command continues the study (failures)."""
