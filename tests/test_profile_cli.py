"""`testbed profile`: the quick grid on the real default model writes a table profile that reads back; bad input
exits 2 with one line; `--check` re-measures a table. Structure and contract only: no speed targets (the
machine is shared, times are noisy)."""
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.bench.profile import GRIDS, HEADER, read_table, write_table
from testbed.cli import main

REPO = Path(__file__).resolve().parent.parent
QUICK = GRIDS["quick"].points()
META_KEYS = {"model", "device", "dtype", "torch_dtype", "threads", "host", "cpu", "platform", "torch", "created",
             "repeats", "load"}


def profile(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "testbed.cli", "profile", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def quick_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "quick.csv"
    # one thread: on a shared 2-core machine two spinning OpenMP threads can stall for seconds per pass
    r = profile("smollm2-135m", "--grid", "quick", "--threads", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out, r


def test_quick_grid_writes_a_table_profile(quick_table):
    out, r = quick_table
    lines = out.read_text().splitlines()
    comments = [l for l in lines if l.startswith("#")]
    assert lines[:len(comments)] == comments                      # comments first
    assert lines[len(comments)] == ",".join(HEADER)
    meta, rows = read_table(out)
    assert META_KEYS <= set(meta)
    assert meta["model"] == "smollm2-135m" and meta["threads"] == "1" and meta["dtype"] == "fp32"
    assert meta["device"] == "cpu-x86" and meta["torch_dtype"] == "float32"
    assert [(b, t, c) for b, t, c, _ in rows] == QUICK
    assert all(s > 0 for *_, s in rows)
    # mostly increasing: of the pairs where one point does at least as much work in every dimension,
    # most take longer (loose: single points on a shared CPU may be off)
    times = {(b, t, c): s for b, t, c, s in rows}
    pairs = [(p, q) for p in times for q in times if p != q and all(x <= y for x, y in zip(p, q))]
    assert sum(times[q] > times[p] for p, q in pairs) > len(pairs) / 2
    # stdout: the table, the roofline line (or why it is missing), where the file went
    assert "measured ms" in r.stdout and "roofline" in r.stdout and f"wrote {out}" in r.stdout
    assert len([l for l in r.stdout.splitlines() if l.split()[:3] in ([str(x) for x in p] for p in QUICK)]) == 8


def test_table_cost_reads_the_table(quick_table):
    compute = pytest.importorskip("nodes.compute")
    out, _ = quick_table
    table = compute.TableCost.load(out)
    for b, t, c in QUICK:
        assert table.pass_s([(c, t)] * b) > 0


def test_check_against_its_own_table_reports_a_median_deviation(quick_table):
    out, _ = quick_table
    r = profile("--check", str(out), "--repeats", "1")
    assert r.returncode in (0, 1), r.stderr                    # 1 = outside tolerance: a benchmark, not a test
    assert "median |now/table - 1|" in r.stdout
    assert len([l for l in r.stdout.splitlines() if l.split()[:3] in ([str(x) for x in p] for p in QUICK)]) == 8


def test_write_and_read_back(tmp_path):
    path = tmp_path / "t.csv"
    write_table(path, {"model": "m", "created": "2025-01-01T00:00:00Z"}, [(1, 2, 3, 0.5), (4, 5, 6, 1.25)])
    meta, rows = read_table(path)
    assert meta == {"model": "m", "created": "2025-01-01T00:00:00Z"}
    assert rows == [(1, 2, 3, 0.5), (4, 5, 6, 1.25)]


@pytest.mark.parametrize("args, says", [
    (["gpt-17"], "smollm2-135m"),                        # unknown model: lists the known ones
    (["smollm2-135m", "--batch", "0,2"], "--batch"),
    (["smollm2-135m", "--tokens", "x"], "--tokens"),
    (["smollm2-135m", "--context", "-16"], "--context"),
    (["smollm2-135m", "--grid", "huge"], "--grid"),
    (["smollm2-135m", "--repeats", "0"], "--repeats"),
    (["smollm2-135m", "--threads", "two"], "--threads"),
    (["smollm2-135m", "--dtype", "int3"], "--dtype"),
    ([], "model"),
    (["--check", "/nonexistent/table.csv"], "--check"),
    (["--check", "/nonexistent/table.csv", "--tolerance", "lots"], "--tolerance"),
])
def test_bad_arguments_exit_2_with_one_line(args, says, capsys):
    assert main(["profile", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_a_file_that_is_not_a_table_exits_2(tmp_path, capsys):
    path = tmp_path / "x.csv"
    path.write_text("# model: smollm2-135m\nhello,world\n")
    assert main(["profile", "--check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "header" in err[0]
