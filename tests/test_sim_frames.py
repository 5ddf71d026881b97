"""The simulator's frame costs beyond the network model (testbed/sim/frames.py; no root needed)."""
import pytest

from testbed.sim.frames import FRAME_OVERHEAD_S, FRAME_RECV_S, FRAME_SEND_S, ReceiveStage, frame_cost_s, frame_work_s

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
