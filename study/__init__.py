"""What to run: scale profiles, study specs, and the Ray Tune runner (python -m study.run NAME)."""
