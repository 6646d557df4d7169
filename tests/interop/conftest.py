from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _attnlab_home(tmp_path, monkeypatch):
    """Every interop test caches into its own temporary folder, never the user's ~/.cache."""
    home = tmp_path / "attnlab-home"
    monkeypatch.setenv("ATTNLAB_HOME", str(home))
    return home
