"""Fixtures shared by test modules."""

import os
import shutil
import tempfile

import pytest


@pytest.fixture
def short_temporary_environment():
    """os.environ with Python's temporary folder (TMPDIR) a short one of the test's own, removed afterwards, and
    Ray's (RAY_TMPDIR) where it was, for the processes a test starts.

    W&B, which every Tune driver imports where it is installed (Ray's usage tally of the callbacks imports its
    W&B integration), makes two folders there that only a normal exit removes: a killed driver left them in
    /tmp. W&B also puts Unix sockets there, and under pytest-xdist tmp_path's name is too long for them (with
    TMPDIR inside tmp_path, `ray start --head` exited at once), hence a short folder."""
    folder = tempfile.mkdtemp(prefix="test-tmp-")
    yield {**os.environ, "TMPDIR": folder, "RAY_TMPDIR": os.environ.get("RAY_TMPDIR", tempfile.gettempdir())}
    shutil.rmtree(folder, ignore_errors=True)
