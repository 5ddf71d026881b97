"""Hostile experiment YAML and profile files, by class (issue 14): deep nesting (a RecursionError traceback
before), numbers of thousands of digits (a ValueError traceback), NaN/inf/negative/huge fields; and profile
tables and specs of the wrong type or absurd size. One line each, naming file and field; exit 2 from the CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nodes.compute import ProfileError, cost_model_from_spec
from nodes.compute.table import TableCost
from testbed.run.experiment import check_file

ROOT = Path(__file__).resolve().parent.parent
DEMO = (ROOT / "experiments" / "demo.yaml").read_text()

CASES = [   # (name, text appended to demo.yaml or replacing a line, the line's start after the file, a piece)
    ("flow_deep", DEMO + "description: " + "[" * 5000 + "\n", "", "invalid YAML: nested too deeply"),
    ("block_deep", DEMO + "description:\n" + "".join("  " * i + "a:\n" for i in range(1, 3000)), "",
     "invalid YAML: nested too deeply"),
    ("digits", DEMO.replace("seed: 0", "seed: " + "9" * 5000), "", "invalid YAML: a number has more than 4300 digits"),
    ("nan", DEMO.replace("seed: 0", "seed: 0\nchannel_interval_ms: .nan"), ":45: channel_interval_ms:", "got nan"),
    ("inf", DEMO.replace("seed: 0", "seed: 0\nchannel_interval_ms: .inf"), ":45: channel_interval_ms:", "got inf"),
    ("negative", DEMO.replace("run_timeout_s: 120", "run_timeout_s: -5"), ":45: limits.run_timeout_s:",
     "expected a number greater than 0, got -5"),
    ("huge_requests", DEMO.replace("  duration_s: 5 ", "  requests: 1000000000000 "), ":37: workload.requests:",
     "less than or equal to 1000000"),
]


@pytest.mark.parametrize("name, text, where, message", CASES, ids=[c[0] for c in CASES])
def test_bad_experiment_file_is_one_line(tmp_path, name, text, where, message):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    problems = check_file(path)
    assert problems and any(p.startswith(f"{path}{where}") and message in p for p in problems), problems
    assert all("\n" not in p and len(p) < 2500 for p in problems)


def test_run_cli_on_a_deeply_nested_experiment_exits_2(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(DEMO + "description: " + "{a: " * 100_000 + "\n")
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(path), "--dry-run"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.splitlines() == [f"{path}: invalid YAML: nested too deeply (lists or mappings more than 100 "
                                     f"levels inside each other)"]


@pytest.mark.parametrize("rows, line, message", [
    ("1,1,0,1e308", 2, "seconds: expected seconds per pass <= 3600, got '1e308'"),
    ("1,1,0,-0.5", 2, "seconds: expected a number > 0, got '-0.5'"),
    ("1,1,0,nan", 2, "seconds: expected a number, got 'nan'"),
    ("1,x,0,0.1", 2, "tokens: expected a number, got 'x'"),
    ("", 2, "expected at least one measured row, got none"),
])
def test_bad_profile_table(tmp_path, rows, line, message):
    path = tmp_path / "t.csv"
    path.write_text("batch,tokens,context,seconds\n" + rows + "\n")
    with pytest.raises(ProfileError) as e:
        TableCost.load(path)
    assert str(e.value.problems[0]) == f"{path}:{line}: {message}"


@pytest.mark.parametrize("table", [5, ["a"], None, ""])
def test_a_table_spec_that_is_not_a_path_is_a_problem_not_a_type_error(table):
    with pytest.raises(ProfileError) as e:
        cost_model_from_spec({"table": table}, Path("."))
    assert len(e.value.problems) == 1 and "table: expected a file path, got" in str(e.value.problems[0])


def test_a_sparse_200_mb_profile_table_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    with open(path, "wb") as f:
        f.truncate(200 << 20)
    with pytest.raises(ProfileError, match="file is over 64 MiB"):
        TableCost.load(path)
