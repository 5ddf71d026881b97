"""The packaged-model cache (nodes/models.py): converted once, even when several nodes ask at the same moment."""
from __future__ import annotations

import threading
import time

from nodes import models


def test_nodes_asking_at_once_convert_the_packaged_model_once(tmp_path, monkeypatch):
    """A verifier and two drafters started together on a fresh machine each converted the model, and all renames but
    the first failed on the finished directory (the demo's first real-model run died so); now one converts while
    the others wait for it and use its directory."""
    monkeypatch.setenv("SPECNET_MODEL_CACHE", str(tmp_path / "cache"))
    calls = []

    def convert(name, out):
        calls.append(name)
        tmp = out.with_name(out.name + f".tmp{len(calls)}")
        tmp.mkdir(parents=True)
        time.sleep(0.2)                              # long enough for every other caller to arrive meanwhile
        (tmp / "model.safetensors").write_bytes(b"weights")
        tmp.rename(out)
        return out

    monkeypatch.setattr(models, "_convert", convert)
    got, errors = [], []

    def ask():
        try:
            got.append(models._converted("smollm2-135m"))
        except Exception as e:                       # a failed rename would land here
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and calls == ["smollm2-135m"]
    assert got == [tmp_path / "cache" / "smollm2-135m"] * 3
