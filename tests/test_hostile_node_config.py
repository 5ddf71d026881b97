"""Hostile node config files (`python -m nodes.drafter|verifier|client --config FILE`), by class (issue 14):
each start prints one line naming the file (and the field), exits 2, no traceback, bounded reads."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nodes.config import DrafterConfig, NodeConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent

CASES = [   # (name, content, a piece of the one line after "FILE: ")
    ("binary", bytes(range(128, 256)) * 10, "not a text file: byte 0 is not UTF-8; expected a JSON node config"),
    ("nul", b'{"name": "d1"}\0', "not a text file: byte 14 is NUL"),
    ("notjson", b"{name: d1", "not valid JSON"),
    ("empty", b"", "not valid JSON"),
    ("deep", b"[" * 100_000 + b"]" * 100_000, "not valid JSON (recursion limit exceeded"),
    ("digits", b'{"name": "d1", "timeout_s": ' + b"9" * 5000 + b"}", "not valid JSON (number out of range"),
    ("toplist", b"[1, 2]", "expected an object"),
    ("wrongtype", json.dumps({"name": "d1", "timeout_s": "soon"}).encode(), "timeout_s: expected a valid number"),
    ("boolean", json.dumps({"name": "d1", "timeout_s": True}).encode(), "timeout_s: expected a number, got true"),
    ("nan", b'{"name": "d1", "timeout_s": NaN}', "timeout_s: expected a number less than or equal to 86400, got nan"),
    ("negative", json.dumps({"name": "d1", "timeout_s": -1}).encode(), "timeout_s: expected a number greater than 0"),
    ("unknown", json.dumps({"name": "d1", "bogus": 1}).encode(), "bogus: unknown field"),
]


@pytest.mark.parametrize("name, content, message", CASES, ids=[c[0] for c in CASES])
def test_load_config_is_one_line(tmp_path, name, content, message):
    path = tmp_path / f"{name}.json"
    path.write_bytes(content)
    with pytest.raises(NodeConfigError) as e:
        load_config(DrafterConfig, path)
    text = str(e.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_a_sparse_200_mb_config_is_refused_on_its_size(tmp_path):
    path = tmp_path / "sparse.json"
    with open(path, "wb") as f:
        f.truncate(200 << 20)
    with pytest.raises(NodeConfigError) as e:
        load_config(DrafterConfig, path)
    assert str(e.value) == f"{path}: file is over 64 MiB: expected a JSON node config"


@pytest.mark.parametrize("module, name, content", [
    ("nodes.drafter", "sparse", None),
    ("nodes.verifier", "deep", b"{" * 50_000),
    ("nodes.client", "binary", bytes(range(128, 256))),
    ("nodes.drafter", "boolean", json.dumps({"name": "d1", "timeout_s": True}).encode()),
    ("nodes.verifier", "missing", False),
])
def test_node_start_with_a_hostile_config_exits_2(tmp_path, module, name, content):
    path = tmp_path / f"{name}.json"
    if content is None:
        with open(path, "wb") as f:
            f.truncate(200 << 20)
    elif content is not False:
        path.write_bytes(content)
    r = subprocess.run([sys.executable, "-m", module, "--config", str(path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: "), lines
