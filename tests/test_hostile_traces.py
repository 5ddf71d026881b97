"""Hostile trace files, by class (issue 14): one `file[:line]: message` line each, exit status 2 from
`testbed trace show`, no traceback, bounded time and memory (a sparse 200 MB file is refused on its size)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.channels.traces import load_trace
from testbed.common.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

CASES = [   # (name, content, line of the first problem or None, a piece of it)
    ("garbage.mm", b"12\nhello\n", 2, "expected a millisecond timestamp (integer >= 0), got 'hello'"),
    ("negative.mm", b"-5\n", 1, "got '-5'"),
    ("negative.csv", b"0,5\n1,-2\n", 2, "rate_mbps: expected a rate in Mbit/s in [0, 10000], got '-2'"),
    ("huge.mm", str(10 ** 400).encode() + b"\n", 1, "expected a millisecond timestamp of at most 604800000"),
    ("digits.mm", b"9" * 5000 + b"\n", 1, "of at most 604800000 (a week)"),
    ("huge62.mm", str(2 ** 62).encode() + b"\n", 1, "of at most 604800000"),   # was a 328 PiB allocation
    ("huge_t.csv", b"0,5\n1e308,5\n", 2, "t_s: expected a time in seconds in [0, 604800], got '1e308'"),
    ("huge_delay.csv", b"0,5,1e308\n1,5,2\n", 1, "delay_ms: expected a delay in ms in [0, 10000]"),
    ("huge_rate.csv", b"0,1e308\n", 1, "rate_mbps: expected a rate in Mbit/s in [0, 10000]"),
    ("nan.csv", b"0,5\n1,nan\n", 2, "rate_mbps: expected a finite number, got 'nan'"),
    ("inf.series", b"5\ninf\n", 2, "expected a finite number, got 'inf'"),
    ("empty.mm", b"", None, "empty trace: no data lines"),
    ("empty.csv", b"t_s,rate_mbps\n", None, "empty trace: no data lines"),
    ("binary.mm", bytes(range(128, 256)) * 10, None, "not a text file: byte 0 is not UTF-8; expected a mahimahi trace"),
    ("nul.csv", b"0,5\n\0\0\0\n", None, "not a text file: byte 4 is NUL; expected a csv trace"),
    ("nonmono.mm", b"5\n3\n10\n", 2, "timestamps must not decrease: 3 after 5 (line 1)"),
    ("nonmono.csv", b"0,5\n2,5\n1,5\n", 3, "t_s must increase: 1 after 2 (line 2)"),
    ("giant.mm", b"x" * 3_000_000 + b"\n", 1, "(3,000,002 characters)"),
    ("giant.csv", b"0," + b"5" * 3_000_000 + b"\n", 1, "rate_mbps: expected a finite number"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("traces")
    out = {}
    for name, content, _, _ in CASES:
        (d / name).write_bytes(content)
        out[name] = d / name
    sparse = d / "sparse.mm"
    with open(sparse, "wb") as f:
        f.truncate(200 << 20)                 # claims 200 MB, holds none
    out["sparse.mm"] = sparse
    return out


@pytest.mark.parametrize("name, content, line, message", CASES, ids=[c[0] for c in CASES])
def test_load_trace_is_one_problem_line(files, name, content, line, message):
    with pytest.raises(ConfigError) as e:
        load_trace(files[name])
    first = str(e.value.problems[0])
    where = f"{files[name]}:{line}: " if line else f"{files[name]}: "
    assert first.startswith(where) and message in first, first
    assert all("\n" not in str(p) and len(str(p)) < 2500 for p in e.value.problems)


def test_a_sparse_200_mb_trace_is_refused_on_its_size(files):
    with pytest.raises(ConfigError) as e:
        load_trace(files["sparse.mm"])
    assert [str(p) for p in e.value.problems] == [f"{files['sparse.mm']}: file is over 128 MiB: expected a "
                                                  f"mahimahi trace"]


@pytest.mark.parametrize("name", ["digits.mm", "huge62.mm", "huge_t.csv", "sparse.mm", "giant.mm", "binary.mm"])
def test_trace_show_cli_exits_2_with_one_line(files, name):
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "trace", "show", str(files[name])], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{files[name]}:") and len(lines[0]) < 2500, lines
    assert r.stdout == ""
    assert os.path.getsize(files["sparse.mm"]) == 200 << 20
