"""The simulator's frame costs beyond the network model (testbed/sim/frames.py) and the sim.frame_costs opt-out
(no root needed)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testbed.run.experiment import check_file, experiment_from_dict
from testbed.run.validate import star
from testbed.sim.frames import (FRAME_OVERHEAD_S, FRAME_RECV_S, FRAME_SEND_S, FrameCosts, ReceiveStage,
                                frame_cost_s, frame_work_s)

REPO = Path(__file__).resolve().parent.parent
OLD_64K_S = 0.00071 + 44e-9 * 64_136      # the single per-byte constant it replaced, at the size it was fitted on
# python -m testbed.bench.framecost, 2026-12-03: a 3.6 MB DRAFT's cost beyond the network model on the emulator
# (one-way time + handling - model, p50 per run; median of 5 runs at 1 Gbit/s 0.5 ms, 2 at 100 Mbit/s 10 ms)
MEASURED_3_6MB = {"1 Gbit/s": 0.03454, "100 Mbit/s": 0.02837}


def test_total_cost_grows_with_size():
    sizes = [0, 1, 100, 1448, 64_135, 64_136, 64_137, 100_000, 512_138, 1_215_618, 3_646_610, 8_000_000]
    costs = [frame_cost_s(n) for n in sizes]
    assert all(b > a for a, b in zip(costs, costs[1:]))
    assert frame_cost_s(0) == pytest.approx(FRAME_SEND_S + FRAME_RECV_S + FRAME_OVERHEAD_S)
    # the per-byte cost falls with size: a MB frame costs far less per byte than a 64 KB one
    assert frame_work_s(3_646_610) / 3_646_610 < 0.3 * frame_work_s(64_136) / 64_136


def test_small_frames_cost_what_the_old_constant_charged():
    assert frame_cost_s(64_136) == pytest.approx(OLD_64K_S, rel=0.03)
    assert frame_cost_s(139) == pytest.approx(0.00071 + 44e-9 * 139, rel=1e-9)      # a verdict: unchanged


@pytest.mark.parametrize("link", sorted(MEASURED_3_6MB))
def test_the_measured_mb_point(link):
    assert frame_cost_s(3_646_610) == pytest.approx(MEASURED_3_6MB[link], rel=0.15)
    assert frame_cost_s(3_646_610) < 0.25 * (0.00071 + 44e-9 * 3_646_610)     # the old constant: 5x too much


def test_the_receiving_hosts_work_is_one_frame_at_a_time():
    stage = ReceiveStage()
    assert stage.admit("v", 1.0, 0.5, 0.0) == 1.5
    assert stage.admit("v", 1.0, 0.5, 0.0) == 2.0            # ready together: after the first
    assert stage.admit("d1", 1.0, 0.5, 0.0) == 1.5           # another host: its own stage
    assert stage.admit("v", 0.2, 0.3, 0.0) == 0.5            # fits in the idle time before the first
    assert stage.admit("v", 0.4, 0.3, 0.0) == pytest.approx(0.8)    # the next gap: after that one
    assert stage.admit("v", 0.4, 0.3, 0.0) == pytest.approx(2.3)    # no gap is long enough: after the last
    assert stage.admit("v", 5.0, 0.0, 0.0) == 5.0            # no work, no wait
    assert stage.admit("v", 3.0, 0.5, 2.5) == 3.5            # the past is forgotten, the future kept


def test_none_charges_nothing_and_a_bad_mode_names_the_field():
    none = FrameCosts("none")
    assert (none.send_s, none.recv_s, none.latency_s, none.work_s(4_000_000)) == (0.0, 0.0, 0.0, 0.0)
    assert none.manifest()["modelled"] == "none" and FrameCosts().manifest()["modelled"] == "emulator"
    with pytest.raises(ValueError, match="sim.frame_costs"):
        FrameCosts("fast")


def experiment(frame_costs: str) -> dict:
    return {"name": "frames", "topology": star(2, 100, 5), "backend": "sim", "seed": 0,
            "verifier": {"backend": "synthetic", "vocab_size": 4000, "verify_base_ms": 15, "verify_per_token_ms": 0.5},
            "drafters": {"backend": "synthetic", "vocab_size": 4000, "alpha": 0.8, "draft_token_ms": 2},
            "workload": {"requests": 2, "max_new": 16, "temperature": 1.0},
            "speculation": {"gamma": 4, "payload": "full"}, "sim": {"frame_costs": frame_costs}}


def arrivals(data: dict, tmp_path: Path) -> list[tuple[float, float]]:
    """(the network model's delivery, the frame's arrival at its receiver) for every frame of a simulated run."""
    from testbed.run.simrun import SimRun
    from testbed.sim.network import SimNetwork
    exp = experiment_from_dict(data).points()[0]
    for sub in ("events", "outputs"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    from testbed.run.workload_files import write_run_files
    write_run_files(exp, tmp_path)
    sim = SimRun(exp, tmp_path, SimNetwork(exp.topology_obj(), seed=exp.seed))
    modelled, pairs = {}, []                    # id(frame) -> (frame, the network model's time)
    deliver, send, arrive = sim.net.deliver_at, sim._send, sim._arrive
    sending = []

    def send_one(src, to, frame):
        sending.append(frame)
        send(src, to, frame)
        sending.pop()

    def deliver_at(*a):
        modelled[id(sending[-1])] = (sending[-1], deliver(*a))
        return modelled[id(sending[-1])][1]

    def arrive_now(sender, node, frame, *rest):
        pairs.append((modelled.pop(id(frame))[1], sim.env.now))
        arrive(sender, node, frame, *rest)
    sim._send, sim.net.deliver_at, sim._arrive = send_one, deliver_at, arrive_now
    stats = sim.run(60)
    assert stats["unfinished"] == [] and not modelled and len(pairs) > 20
    return pairs


def test_none_delivers_each_frame_at_the_network_models_time(tmp_path):
    for model, at in arrivals(experiment("none"), tmp_path / "none"):
        assert at == model
    late = [at - model for model, at in arrivals(experiment("emulator"), tmp_path / "emu")]
    assert min(late) >= FRAME_OVERHEAD_S and max(late) > 0.002      # 64 KB drafts: ~3.5 ms beyond the network


def test_a_bad_value_is_one_line_naming_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(experiment("fast")))
    problems = check_file(path)
    assert len(problems) == 1 and "sim.frame_costs" in problems[0] and "'fast'" in problems[0], problems
    assert "\n" not in problems[0]


def test_the_run_records_what_was_modelled(tmp_path):
    path = tmp_path / "none.yaml"
    path.write_text(yaml.safe_dump(experiment("none")))
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(path), "--results", str(tmp_path / "res")],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (d,) = [p for p in (tmp_path / "res" / "frames").iterdir() if (p / "manifest.json").exists()]
    man = json.loads((d / "manifest.json").read_text())
    assert man["config"]["sim"] == {"frame_costs": "none"} and man["sim"]["frame_costs"]["modelled"] == "none"
    assert "frame costs beyond the network: none" in (d / "summary.md").read_text()
