"""What to run and how: scale profiles, the trials of a study (trials), the Ray Tune runner
(python -m study.run NAME) with its options and output folder (options, outputs), seeds in rounds
(rounds), progress, cluster submission, experiment trackers (trackers) and a resized copy of an image
tree (prepare); its safety (lock, preflight, failures, files); and measurement (benchmark, table4,
packing, cost, svm_cost, smoke, positive_control). The studies and claims themselves are the
top-level `catalogue` package."""
