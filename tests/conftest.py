import os
import shutil

from pathlib import Path

import pytest

# Tests name topologies relative to the repository, whatever directory pytest was started from.
os.chdir(Path(__file__).resolve().parent.parent)

ROOT_REASON = "needs root with Mininet and tc (CI runs as root, so these run there)"


def pytest_collection_modifyitems(config, items):
    """Tests marked `root` need root and Mininet; elsewhere they are skipped with the reason said aloud."""
    if os.geteuid() == 0 and shutil.which("mnexec"):
        return
    skip = pytest.mark.skip(reason=ROOT_REASON)
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
