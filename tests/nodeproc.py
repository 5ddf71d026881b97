"""Start verifier and drafter node processes on loopback for tests; stop them whatever happens."""
import json
import subprocess
import sys
import time
from contextlib import contextmanager


@contextmanager
def verifier(*args: str, log=None):
    argv = [sys.executable, "-m", "nodes.verifier", "--bind", "tcp://127.0.0.1:*", *args]
    if log:
        argv += ["--log", str(log)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"verifier did not start: {line}{p.stderr.read()}")
        yield p, line.split()[1]
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def start_drafter(endpoint: str, name: str, out, *args: str, log=None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "nodes.drafter", "--connect", endpoint, "--name", name, "--out", str(out), *args]
    if log:
        argv += ["--log", str(log)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert p.returncode == 0, f"drafter failed ({p.returncode}): {err[-2000:]}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def communicate(p: subprocess.Popen, timeout: float = 30) -> tuple[str, str]:
    """Wait for a node process and return its output; a process still running after `timeout` is killed."""
    try:
        return p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def read_jsonl(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
