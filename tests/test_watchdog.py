"""The run watchdog and the death signal, without Mininet: a stand-in runner that starts a child and dies by SIGKILL.
(The 20-moment SIGKILL test of a real `testbed run` is tests/test_sigkill_runs.py, root only.)"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from testbed.run.watchdog import mark_killed, reap

REPO = Path(__file__).resolve().parent.parent

# A runner in miniature: registers a run with its results directory, starts its watchdog, starts a tagged child
# that dies with it and one that does not (only the watchdog can stop that one), then is killed.
RUNNER = """
import os, signal, subprocess, sys, time
from pathlib import Path
from testbed.net.runs import Run, die_with_parent
from testbed.run.watchdog import Watchdog
run_dir = Path(sys.argv[1])
run = Run.new("t", run_dir)
wd = Watchdog(run, run_dir / "watchdog.log")
run.register()
a = subprocess.Popen(["sleep", "300"], env=run.env(), preexec_fn=die_with_parent())
b = subprocess.Popen(["sleep", "301"], env=run.env(), start_new_session=True)
print(run.id, a.pid, b.pid, flush=True)
if sys.argv[2] == "done":
    a.kill(); b.kill(); a.wait(); b.wait(); run.unregister(); wd.done()
else:
    time.sleep(300)
"""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        time.sleep(0.05)
    return cond()


def running_manifest(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "manifest.json").write_text(json.dumps({"status": "running", "started": time.time(),
                                                        "config": {"name": "t"}}))


def start_runner(tmp_path: Path, how: str) -> tuple[subprocess.Popen, str, int, int]:
    run_dir = tmp_path / "run"
    running_manifest(run_dir)
    env = {**os.environ, "SPECNET_RUN_DIR": str(tmp_path / "registry"), "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-c", RUNNER, str(run_dir), how], stdout=subprocess.PIPE, text=True,
                         env=env, cwd=REPO)
    rid, a, b = p.stdout.readline().split()
    return p, rid, int(a), int(b)


def test_a_killed_runner_takes_its_children_and_its_watchdog_marks_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECNET_RUN_DIR", str(tmp_path / "registry"))
    p, rid, a, b = start_runner(tmp_path, "die")
    assert alive(a) and alive(b) and (tmp_path / "registry" / f"{rid}.json").exists()
    p.kill()
    p.wait()
    assert wait_until(lambda: not alive(a), 5), "the death signal did not reach the child"
    assert wait_until(lambda: not alive(b), 10), "the watchdog did not kill the run's other process"
    assert wait_until(lambda: not (tmp_path / "registry" / f"{rid}.json").exists(), 10)
    assert wait_until(lambda: json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "killed", 20)
    assert wait_until(lambda: "watchdog of run" in (tmp_path / "run" / "watchdog.log").read_text(), 10)


def test_a_runner_that_says_done_leaves_its_run_as_it_was(tmp_path):
    p, rid, a, b = start_runner(tmp_path, "done")
    assert p.wait(30) == 0          # done() waits for the watchdog to exit: nothing can follow
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "running"
    assert "watchdog" not in (tmp_path / "run" / "watchdog.log").read_text()


def test_mark_killed_leaves_a_finished_manifest_alone(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"status": "complete", "started": 0}))
    assert not mark_killed(tmp_path, "x")
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "complete"
    assert not mark_killed(tmp_path / "missing", "x")
    (tmp_path / "manifest.json").write_text("[1, 2")      # half-written or hostile: not a crash
    assert not mark_killed(tmp_path, "x")


def test_reap_marks_a_dead_runs_manifest_and_spares_a_live_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECNET_RUN_DIR", str(tmp_path / "registry"))
    (tmp_path / "registry").mkdir()
    dead, live = tmp_path / "dead", tmp_path / "live"
    for d in (dead, live):
        running_manifest(d)
    # a dead owner: a pid that exited; a live one: this process
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "registry" / "aaaa.json").write_text(json.dumps({"id": "aaaa", "pid": gone.pid, "pid_start": "1",
                                                                "run_dir": str(dead)}))
    from testbed.net.runs import Run
    Run("bbbb", "t", run_dir=str(live)).register()
    report = reap()
    assert report.runs == ["aaaa"] and report.skipped_live == ["bbbb"]
    assert report.marked == [str(dead)] and "marked killed" in str(report)
    assert json.loads((dead / "manifest.json").read_text())["status"] == "killed"
    assert json.loads((live / "manifest.json").read_text())["status"] == "running"
