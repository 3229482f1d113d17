"""What to run: the catalogue of studies and claims, scale profiles, and the Ray Tune runner
(python -m study.run NAME)."""
