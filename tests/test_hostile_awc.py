"""Hostile AWC weights files (speculation.policy {policy: awc, weights_path}), by class (issue 14): one line
naming the file and the field, never a RecursionError or TypeError traceback, bounded reads."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.policies.awc import DEFAULT_WEIGHTS, AWCWeightsError, load_weights

ROOT = Path(__file__).resolve().parent.parent
GOOD = json.loads(DEFAULT_WEIGHTS.read_text())


def _with(change) -> bytes:
    doc = copy.deepcopy(GOOD)
    change(doc)
    return json.dumps(doc).encode()


CASES = [   # (name, content, a piece of the message)
    ("notjson", b"{weights", "not JSON: Expecting property name"),
    ("binary", bytes(range(128, 256)) * 10, "not JSON: byte 0 is not UTF-8 (a binary file?)"),
    ("deep", b"[" * 100_000 + b"]" * 100_000, "not JSON weights: arrays or objects nested too deeply"),
    ("digits", b'{"format": ' + b"9" * 5000 + b"}", "not JSON: Exceeds the limit (4300 digits)"),
    ("toplist", b"[1, 2]", "expected a JSON object at the top, got list"),
    ("nan", _with(lambda d: d["layers"][0]["weights"].__setitem__(0, float("nan"))),
     "layers[0].weights[0]: expected a finite number, got nan"),
    ("features_int", _with(lambda d: d.__setitem__("features", 5)), "features: expected ['queue_util'"),
    ("activation_list", _with(lambda d: d["layers"][0].__setitem__("activation", [1])),
     "layers[0].activation: expected one of ['linear', 'relu', 'tanh'], got [1]"),
    ("shape_huge", _with(lambda d: d["layers"][0].__setitem__("shape", [d["layers"][0]["shape"][0], 10 ** 9])),
     "layers[0].weights: expected a list of"),
    ("weights_str", _with(lambda d: d["layers"][0].__setitem__("weights", "abc")),
     "layers[0].weights: expected a list of 160 numbers, got str"),
    ("scale_bool", _with(lambda d: d.__setitem__("gamma_scale", True)), "gamma_scale: expected a finite number > 0"),
    ("huge_value", _with(lambda d: d.__setitem__("format", "x" * 1_000_000)), "(1,000,002 characters)"),
]


@pytest.mark.parametrize("name, content, message", CASES, ids=[c[0] for c in CASES])
def test_bad_weights_are_one_line(tmp_path, name, content, message):
    path = tmp_path / f"{name}.json"
    path.write_bytes(content)
    with pytest.raises(AWCWeightsError) as e:
        load_weights(path)
    text = str(e.value)
    assert text.startswith(f"awc weights {path}: ") and message in text and "\n" not in text, text
    assert len(text) < 1000


def test_a_sparse_200_mb_weights_file_is_refused_on_its_size(tmp_path):
    path = tmp_path / "sparse.json"
    with open(path, "wb") as f:
        f.truncate(200 << 20)
    with pytest.raises(AWCWeightsError, match=r"file is over 16 MiB: expected JSON weights"):
        load_weights(path)


def test_cli_with_a_recursion_bomb_for_weights_exits_2(tmp_path):
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "run", "experiments/demo.yaml", "--dry-run", "--set",
                        f"speculation.policy={{policy: awc, weights_path: {path}}}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "nested too deeply" in lines[0], lines
