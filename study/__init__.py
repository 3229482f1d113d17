"""What to run and how. Running: scale profiles (profiles), the trials of a study (trials), the Ray Tune
runner (python -m study.run NAME) with its options and output folder (options, outputs), the Tune
trainable (trainable), seeds in rounds (rounds), progress, cluster submission (submit), experiment
trackers (trackers), a plan's device-hours (cost) and GPU memory per trial (packing), a resized copy
of an image tree (prepare), re-keying an old table (rehash), and file writes that stay inside their
folder (files, standard library only, so that analysis/ may write with it). Safety before and during
a run is study.safety; commands that measure are study.measure. The studies and claims themselves are
the top-level `catalogue` package."""
