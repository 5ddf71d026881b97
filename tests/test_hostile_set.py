"""Hostile `--set PATH=VALUE` items, by class (issue 14): each is one line naming the item, exit status 2, no
traceback, and no hang or unbounded memory (an alias bomb or 10,000 nested brackets used to hang or crash the
CLI). The CLI runs as a real subprocess; the time bound is generous for a loaded host, parsing takes ~1 s."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.common.errors import ConfigError
from testbed.common.yamlconf import MAX_EXPANDED_VALUES, load_value
from testbed.run.experiment import load_experiment
from testbed.run.sweep import check_sets

ROOT = Path(__file__).resolve().parent.parent
DEMO = "experiments/demo.yaml"
ZHU = "experiments/papers/zhu/system.yaml"      # an inline topology: list paths like topology.links.0.rate_up_mbps

BOMB = "[&a [x,x,x,x,x,x,x,x,x]" + "".join(
    f", &{n} [" + ",".join([f"*{p}"] * 9) + "]" for p, n in zip("abcdefgh", "bcdefghi")) + "]"   # 9^9 values

CASES = [   # (experiment, item, a piece of the one problem line)
    (DEMO, "=3", "expected PATH=VALUE"),
    (DEMO, "speculation..gamma=3", "expected a dotted field path"),
    (DEMO, "nope.deeper=3", "unknown field 'nope'"),
    (DEMO, "speculation.gamma.x=3", "speculation.gamma is a value, not a group of fields"),
    (DEMO, "drafters.nodes=" + BOMB, "aliases expand to more than"),
    (DEMO, "speculation.gamma=" + "[" * 10000, "nested too deeply"),
    (DEMO, "speculation.gamma=" + "{a: " * 5000, "nested too deeply"),
    (DEMO, "speculation.gamma=" + "9" * 5000, "more than 4300 digits"),
    (DEMO, "name=" + "x" * 100_000, "expected at most 65,536"),
    (DEMO, "drafters.overrides={d1: {a: {b: [1, {c: 2}]}}}", "unknown field"),
    (DEMO, "speculation.gamma=true", ": expected a number, got true"),
    (DEMO, "speculation.gamma=.nan", "expected a finite number, got nan"),
    (DEMO, "links.d1-ap1.rate_up_mbps=.inf", "got inf"),
    (DEMO, "workload.duration_s=.nan", "got nan"),
    (DEMO, "links.d1-ap1.rate_up_mbps=-1", "expected a number greater than 0, got -1"),
    (DEMO, "workload.requests=1000000000000", "less than or equal to 1000000"),
    (DEMO, "seed=1e400", "expected a valid integer"),
    (ZHU, "topology.links.99.rate_up_mbps=3", "topology.links is a list of 5: expected an index 0-4, got '99'"),
    (ZHU, "topology.nodes.u.count=1000000000000", "expected a whole number of hosts from 1 to 100000"),
]


def _cli(exp: str, item: str | bytes) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", exp, "--dry-run", "--set", item],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def results():
    """All the CLI cases at once, one process each (in parallel: the module stays fast)."""
    procs = [(_cli(exp, item), item) for exp, item, _ in CASES]
    procs.append((_cli(DEMO, b"speculation.gamma=\x80\xff"), "bytes"))
    out = {}
    for proc, item in procs:
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"--set {str(item)[:60]} did not finish within 60 s (a bomb expanding?)")
        out[item] = (proc.returncode, stderr.decode("utf-8", "replace"))
    return out


@pytest.mark.parametrize("exp, item, message", CASES, ids=[f"{i}:{c[1][:30]}" for i, c in enumerate(CASES)])
def test_hostile_set_is_one_line_and_exit_2(results, exp, item, message):
    rc, stderr = results[item]
    lines = stderr.splitlines()
    assert rc == 2 and "Traceback" not in stderr, stderr[-2000:]
    assert len(lines) == 1 and message in lines[0], lines
    assert len(lines[0]) < 2500          # the item is echoed clipped, not 100 kB of it
    assert lines[0].startswith("--set "), lines


def test_a_boolean_set_names_the_set_item(results):
    """strict.py's boolean check is model-level (its path is the group, speculation; its message starts with the
    field): experiment.py's problem() still blames the --set item, not the file's line."""
    assert results["speculation.gamma=true"][1].startswith("--set speculation.gamma=true: ")


def test_undecodable_bytes_in_a_set_value(results):
    rc, stderr = results["bytes"]
    assert rc == 2 and "Traceback" not in stderr
    assert stderr.count("\n") == 1 and "not text: character 0 is not UTF-8" in stderr, stderr


def test_load_value_bounds():
    with pytest.raises(ValueError, match="aliases expand"):
        load_value(BOMB)
    with pytest.raises(ValueError, match="nested too deeply"):
        load_value("[" * 200)
    assert load_value("[1, [2, {a: [3]}]]") == [1, [2, {"a": [3]}]]
    assert load_value("{uniform: [0.5, 5]}") == {"uniform": [0.5, 5]}
    assert check_sets(["speculation.gamma=4", "gamma", "a.b={x: 1}"]) == []    # only values; paths are checked later


def test_an_alias_bomb_through_the_api_is_refused_before_validation():
    """load_experiment parses values itself, bounded like the CLI's (yamlconf.load_value): the shared lists are
    counted, not walked 9^9 times."""
    with pytest.raises(ConfigError) as e:
        load_experiment(DEMO, ["drafters.nodes=" + BOMB])
    assert [str(p) for p in e.value.problems] == [
        f"--set drafters.nodes={BOMB}: invalid YAML value: its aliases expand to more than "
        f"{MAX_EXPANDED_VALUES:,} values (an alias bomb?)"]
