"""`testbed run` refuses bad input before starting anything (no root needed)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bad_experiment_exits_2_with_one_line_per_problem_and_starts_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntopology: ../nowhere.yaml\nspeculation: {gamma: 99}\n")
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(bad), "--results", str(tmp_path / "res")],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines and all(l.startswith(f"{bad}:") for l in lines), r.stderr
    assert any("speculation.gamma" in l for l in lines)
    assert not (tmp_path / "res").exists()


def test_bad_set_override_exits_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "run", "experiments/demo.yaml", "--dry-run",
                        "--set", "speculation.gamma=lots"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 2 and "--set speculation.gamma=lots" in r.stderr


def test_dry_run_lists_the_sweep(tmp_path):
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "run", "experiments/demo.yaml", "--dry-run"],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "12 run(s)" in r.stdout and "gamma=0" in r.stdout and "nodes.drafter" in r.stdout
