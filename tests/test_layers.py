"""The package layers hold: no module imports from a layer above its own (contracts in pyproject.toml)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_import_contracts_hold():
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        exe = shutil.which("lint-imports")
    assert exe, "lint-imports is not installed: `make setup` installs import-linter (the test extra)"
    r = subprocess.run([str(exe), "--no-cache"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"import contracts broken:\n{r.stdout[-4000:]}{r.stderr[-2000:]}"
    assert "0 broken" in r.stdout


def test_contracts_catch_an_upward_import(tmp_path):
    """A negative control: the same contracts fail on a copy of the tree where a policy imports the runner."""
    root = Path(__file__).resolve().parent.parent
    for name in ("testbed", "nodes"):
        shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "pyproject.toml", tmp_path / "pyproject.toml")
    bad = tmp_path / "testbed" / "policies" / "batching.py"
    bad.write_text(bad.read_text() + "\nfrom testbed.run import runner  # noqa: E402,F401\n")
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.fail("lint-imports is not installed")
    r = subprocess.run([str(exe), "--no-cache"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode != 0
    assert "testbed.policies.batching -> testbed.run.runner" in r.stdout
