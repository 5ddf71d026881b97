"""Bad topologies are rejected by `testbed check` with exactly the expected, actionable messages.

Each file in tests/data/bad_topologies/ starts with one `# expect: <line>` comment per problem the CLI must
report, in order, with the file's path written as `{file}`. The CLI runs as a real subprocess (no root, no
Mininet: `check` only validates and prints the plan), and must exit 2 with those lines on stderr and nothing
on stdout.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "tests" / "data" / "bad_topologies"
BAD_FILES = sorted(BAD.glob("*.yaml"))
SHIPPED = sorted((ROOT / "topologies").glob("*.yaml"))

# Problems about the whole file (no field path); every other problem is `file:line: field.path: message`.
WHOLE_FILE = ("invalid YAML: ", "file is empty", "expected a mapping of fields at the top level", "cannot read file")
FIELD_PATH = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+|\[\d+\])*"


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "testbed.cli", "check", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def expected_lines(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        if not line.startswith("# expect: "):
            break                                   # the expectations are the file's first lines
        out.append(line.removeprefix("# expect: ").replace("{file}", str(path)))
    return out


@pytest.fixture(scope="module")
def results() -> dict[Path, tuple[int, str, str]]:
    """Run `check` on every bad file at once (one process each, in parallel: keeps the module fast)."""
    procs = {p: _cli(str(p), "--delay-backend", "nfqueue") for p in BAD_FILES}
    out = {}
    for p, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        out[p] = (proc.returncode, stdout, stderr)
    return out


def test_enough_bad_files():
    assert len(BAD_FILES) >= 18
    for p in BAD_FILES:
        assert expected_lines(p), f"{p.name} has no leading '# expect:' line"


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_topology(path: Path, results):
    rc, stdout, stderr = results[path]
    expected = expected_lines(path)
    got = stderr.splitlines()
    assert got == expected, f"\nexpected:\n  " + "\n  ".join(expected) + "\ngot:\n  " + "\n  ".join(got)
    assert rc == 2
    assert stdout == ""
    prefix = re.escape(str(path))
    for line in got:
        if any(marker in line for marker in WHOLE_FILE):
            # the YAML gives a line for everything except an empty file
            pattern = rf"{prefix}: .+" if path.name == "empty.yaml" else rf"{prefix}:[1-9]\d*: .+"
        else:
            pattern = rf"{prefix}:[1-9]\d*: {FIELD_PATH}: \S.*"
        assert re.fullmatch(pattern, line), f"not of the form file:line: field.path: message: {line!r}"


def test_three_problems_are_reported_together(results):
    path = BAD / "three_problems.yaml"
    rc, _, stderr = results[path]
    lines = stderr.splitlines()
    assert rc == 2 and len(lines) == 3
    assert [l.split(": ", 2)[1] for l in lines] == ["nodes.h2.role", "links[0].rate_up_mbps", "links[1].los_pct"]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    proc = _cli(str(path), "--delay-backend", "nfqueue")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert stdout == ""
    assert stderr.splitlines() == [f"{path}: cannot read file: No such file or directory"]


def test_the_three_shipped_topologies_exist():
    assert {"star-wifi-4", "many-to-many", "edge-cloud"} <= {p.stem for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_topologies_pass(path: Path):
    proc = _cli(str(path), "--delay-backend", "nfqueue")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stdout.startswith(f"{path}: valid\n")
    assert stderr == ""


def test_check_on_an_experiment_file_checks_it_as_an_experiment(tmp_path):
    good = _cli("experiments/papers/zhu/system.yaml")
    out, err = good.communicate(timeout=60)
    assert good.returncode == 0 and "valid experiment, 1 point(s), backend sim" in out, err
    bad = tmp_path / "exp.yaml"
    bad.write_text("name: x\ntopology: nope.yaml\n")
    proc = _cli(str(bad))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == ""
    assert err.strip() == f"{bad}:2: topology: topology file 'nope.yaml' not found (looked for {tmp_path / 'nope.yaml'})"


# -- hostile files (issue 14): one line, exit 2, no traceback, in bounded time ---------------------------------

BOMB = "".join(f"{k}: &{k} [" + ",".join([f"*{p}"] * 10 if p else ['"x"'] * 10) + "]\n"
               for k, p in zip("abcdefghi", [None, *"abcdefgh"]))


@pytest.mark.parametrize("content, message", [
    (bytes(range(256)) * 8, "not a text file: byte 128 is not UTF-8; expected YAML"),
    (BOMB.encode(), "invalid YAML: its aliases expand to more than 1,000,000 values (an alias bomb?)"),
    (b"nodes: {}\n" + b"#" * (16 << 20), "file is over 16 MiB: expected a YAML file of fields"),
], ids=["binary", "alias-bomb", "over-16MiB"])     # not the content: pytest puts the id in the environment (E2BIG)
def test_hostile_files_are_refused_in_one_line(tmp_path, content, message):
    import time
    from testbed.common.errors import ConfigError
    from testbed.common.yamlconf import load_document
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        load_document(path)
    assert time.perf_counter() - t0 < 1.0
    assert [str(p) for p in e.value.problems] == [f"{path}: {message}"]
    for cmd in (["check", str(path)], ["run", str(path), "--dry-run"]):
        r = subprocess.run([sys.executable, "-m", "testbed.cli", *cmd], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and r.stderr.strip() == f"{path}: {message}", r.stderr


def test_a_closed_stdout_is_quiet():
    r = subprocess.run(f"{sys.executable} -m testbed.cli check topologies/pool-1000x10.yaml | head -1", shell=True,
                       cwd=ROOT, capture_output=True, text=True, timeout=60, executable="/bin/bash")
    assert r.stdout == "topologies/pool-1000x10.yaml: valid\n"
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
