"""The typed events of RUN/events/*.jsonl (nodes/events.py): every type round-trips, today's dict lines decode,
and a reader meets truncated lines, garbage and unknown event types as reported issues, never as crashes."""
import json

import numpy as np
import pytest

from nodes.events import (EVENT_TYPES, Answer, Ask, AuthRefused, ChannelLate, Connect, Fault, Recovery, Load, Pace, Crash, Done, Draft, Error, EventLog, EventTail, Finish, Hello,
                          Link, Plan, Policy, Ready, Refused, Route, Schedule, Start, Verdict, Verify, Welcome, decode,
                          encode, load_run, of_type, read_events)

T = 1_700_000_000.25

# One of each type, with every field set away from its default where it has one.
EXAMPLES = [
    Welcome(t=T, node="d1", verifier="verifier", model="synthetic", endpoint="tcp://10.0.0.1:5555"),
    Route(t=T, node="d1", session="d1-s0", verifier="v2", queues={"v1": 3, "v2": 0}, policy="jsq"),
    Start(t=T, node="d1", session="d1-s0", prompt_tokens=12, bytes_out=180, verifier="v2"),
    Draft(t=T, node="d1", session="d1-s0", round=3, gamma=4, pre_drafted=2, draft_s=0.012, bytes_out=96),
    Verdict(t=T, node="d1", session="d1-s0", round=3, gamma=4, accepted=2, token=318, rtt_s=0.051, queue_s=0.002,
            verify_s=0.02, batch=3, one_way_s=0.01, hit=1, kept=1, wasted=2, bytes_in=44, done=True, tokens=3),
    Finish(t=T, node="d1", session="d1-s0", tokens=48, rounds=14, proposed=56, accepted=33, hits=4, wasted=9),
    Done(t=T, node="d1", sessions=2, idle_s=0.4),
    Crash(t=T, node="d1", error="ConnectionError: gone"),
    Ready(t=T, node="verifier", endpoint="tcp://10.0.0.9:5555", model="smollm2-135m", batching="fifo"),
    Hello(t=T, node="verifier", drafter="d1", model="smollm2-135m:int8", payloads=["ids", "topk:8"], proactive=True),
    Refused(t=T, node="verifier", drafter="d9", tokenizer="other", vocab=999),
    AuthRefused(t=T, node="verifier", peer="10.0.0.9", key="rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
                reason="key not in the verifier's list", repeated=3),
    Error(t=T, node="verifier", drafter="d1", code="bad_round", message="round 4 after 2"),
    Verify(t=T, node="verifier", drafter="d1", session="d1-s0", round=3, gamma=4, accepted=2, tokens=3, done=True,
           t_draft_sent=T - 0.03, t_arrived=T - 0.02, queue_s=0.002, verify_s=0.02, batch=3, batch_id=17,
           bytes_in=96, bytes_out=44, next_gamma=5),
    Plan(t=T, node="verifier", rule="zhu", batches=[["d1-s0", "d2-s0"], ["d3-s0"]], lengths=[4, 2],
         total_latency=0.08, cost={"base_s": 0.02, "per_token_s": 0.001}),
    Policy(t=T, node="verifier", session="d1-s0", policy="network", gamma=5, alpha=0.8, rtt_s=0.04, uplink_mbps=8.0,
           downlink_mbps=20.0, bytes_per_token=24.0, draft_s_per_token=0.003),
    Schedule(t=T, node="verifier", scheduler="goodspeed", budget=16, estimates={"d1-s0": [0.8, 3.2]},
             allocation={"d1-s0": 6}),
    Link(t=T, node="channel", link="d1-ap1", rate_up_mbps=12.5, rate_down_mbps=30.0, delay_ms=5.0, jitter_ms=1.0,
         loss_pct=0.5, loss_down_pct=0.1, tick=7, t_model_s=0.7, a="d1", b="ap1", station="d1", distance_m=12.0,
         path_loss_db=80.1, shadowing_db=-1.2, fading_db=0.4, snr_up_db=21.0, snr_down_db=25.0, efficiency_up=4.1,
         efficiency_down=5.0, full_band_rate_up_mbps=25.0, full_band_rate_down_mbps=30.0, share_up=0.5,
         share_down=1.0, demand_up=96.0, demand_down=44.0, gamma_joint=5, ge_loss_pct=0.2),
    ChannelLate(t=T, node="channel", skipped=3, tick=12),
    Pace(t=T, node="d1", work="verify", profile_s=0.02, realised_s=0.021, tokens=10, batch=2),
    Load(t=T, node="runner", cpu_busy=0.5, loadavg_1m=1.2, cpus=2),
    Connect(t=T, node="u1", endpoint="tcp://10.0.0.3:5600", requests=2),
    Ask(t=T, node="u1", request="u1-r0", prompt_tokens=300, max_new=128, bytes=1290),
    Answer(t=T, node="u1", request="u1-r0", tokens=128, latency_s=3.5, bytes_in=700),
    Fault(t=T, node="channel", fault=0, repeat=0, kind="outage", link="ap1-verifier", edge="start", tick=30,
          t_model_s=3.0, duration_s=2.0),
    Recovery(t=T, node="d1", what="resumed", peer="verifier", session="d1-s0", round=12, committed=40, bytes_out=300),
]


def test_examples_cover_every_event_type():
    assert sorted(type(e).__struct_config__.tag for e in EXAMPLES) == sorted(EVENT_TYPES)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip(event):
    line = encode(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == event
    assert json.loads(line)["event"] == type(event).__struct_config__.tag


def test_todays_dict_lines_decode_to_typed_events():
    """As nodes wrote them before the typed events (json.dumps of a dict): t, node and event first, compact."""
    def legacy(event, node, **fields):
        return json.dumps({"t": T, "node": node, "event": event, **fields}, separators=(",", ":"))

    v = decode(legacy("verdict", "d1", session="d1-s0", round=1, gamma=4, accepted=3, token=7, rtt_s=0.05,
                      queue_s=0.0, verify_s=0.02, batch=1, one_way_s=0.01, hit=0, kept=0, wasted=1, bytes_in=40,
                      done=False, tokens=4))
    assert isinstance(v, Verdict) and (v.t, v.node, v.session, v.accepted, v.tokens) == (T, "d1", "d1-s0", 3, 4)
    s = decode(legacy("start", "d1", session="d1-s0", prompt_tokens=3, bytes_out=100, verifier=None))
    assert s == Start(t=T, node="d1", session="d1-s0", prompt_tokens=3, bytes_out=100)
    assert decode(legacy("done", "d1", sessions=2, idle_s=0.3)) == Done(t=T, node="d1", sessions=2, idle_s=0.3)
    # the runner's links.jsonl line before this module (default separators, and an int rate)
    link = decode(json.dumps({"t": T, "node": "runner", "event": "link", "link": "d1-ap1", "rate_up_mbps": 10,
                              "rate_down_mbps": 20.0, "delay_ms": 5, "jitter_ms": 0, "loss_pct": 0}))
    assert isinstance(link, Link) and link.rate_mbps("up") == 10.0 and link.loss_down_pct is None
    assert link.tick is None and link.snr_up_db is None


def test_link_lines_keep_the_keys_their_writer_knew():
    runner = encode(Link(t=T, node="runner", link="d1-ap1", rate_up_mbps=10.0, rate_down_mbps=20.0, delay_ms=0.0,
                         jitter_ms=0.0, loss_pct=0.0, loss_down_pct=0.0))
    assert set(json.loads(runner)) == {"t", "node", "event", "link", "rate_up_mbps", "rate_down_mbps", "delay_ms",
                                       "jitter_ms", "loss_pct", "loss_down_pct"}          # zeros kept, no nulls
    channel = json.loads(encode(EXAMPLES[[type(e) for e in EXAMPLES].index(Link)]))
    assert None not in channel.values() and set(channel) == {"event", *Link.__struct_fields__}


def test_numpy_scalars_are_written_as_numbers():
    e = Link(t=T, node="channel", link="l", rate_up_mbps=np.float64(2.5), rate_down_mbps=3.0, delay_ms=1.0,
             jitter_ms=0.0, loss_pct=np.float32(0.5), gamma_joint=np.int64(4), snr_up_db=round(np.float64(1.23456), 3))
    back = decode(encode(e))
    assert (back.rate_up_mbps, back.loss_pct, back.gamma_joint, back.snr_up_db) == (2.5, 0.5, 4, 1.235)
    with pytest.raises(NotImplementedError, match="object"):
        encode(Crash(t=T, node="d1", error=object()))


def test_decode_refuses_what_is_not_an_event():
    for line in ['{"t": 1, "node": "d1", "event": "teleport", "where": "mars"}',   # a newer version's type
                 '{"t": 1, "node": "d1", "event": "draft", "round": 1}',           # a required field missing
                 '{"node": "d1", "event": "done"}', "[1, 2]", "not json", '{"t": 1, "node": "d1", "ev']:
        with pytest.raises(ValueError):
            decode(line)


def test_read_events_skips_and_reports_bad_lines(tmp_path):
    path = tmp_path / "d1.jsonl"
    path.write_bytes(encode(EXAMPLES[0]) + b"garbage\x00\xff\n\n"
                     + b'{"t": 1, "node": "d1", "event": "teleport"}\n' + encode(EXAMPLES[2])
                     + encode(Done(t=T, node="d1"))[:20])                          # a crash mid-line
    events, issues = read_events(path)
    assert events == [EXAMPLES[0], EXAMPLES[2]]
    assert len(issues) == 3
    assert issues[0].startswith("d1.jsonl: unparsable line 2 skipped")
    assert issues[1].startswith("d1.jsonl: unparsable line 4 skipped") and "teleport" in issues[1]
    assert issues[2].startswith("d1.jsonl: truncated last line skipped")


def test_event_log_appends_one_line_per_event(tmp_path):
    path = tmp_path / "sub" / "d1.jsonl"
    with EventLog(path, "d1") as log:
        for e in EXAMPLES[:3]:
            log.write(e)
    with EventLog(path, "d1") as log:
        log.write(EXAMPLES[3])
    EventLog(None, "quiet").write(EXAMPLES[0])                                   # no path: nothing written
    assert read_events(path) == (EXAMPLES[:4], [])


def test_tail_yields_complete_lines_only_and_survives_garbage(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    tail = EventTail({"a": a, "b": b})
    assert list(tail.new_events()) == []                                         # not created yet
    line = encode(EXAMPLES[3])
    a.write_bytes(encode(EXAMPLES[2]) + line[:15])
    assert list(tail.new_events()) == [("a", EXAMPLES[2])]
    assert list(tail.new_events()) == []                                         # the half line waits
    with open(a, "ab") as f:
        f.write(line[15:] + b"\x00garbage\n" + b'{"t": 1, "node": "a", "event": "teleport"}\n'
                + encode(EXAMPLES[6]))
    b.write_bytes(encode(EXAMPLES[9]))
    assert list(tail.new_events()) == [("a", EXAMPLES[3]), ("a", EXAMPLES[6]), ("b", EXAMPLES[9])]
    assert list(tail.new_events()) == []


def test_load_run_groups_logs_by_writer(tmp_path):
    ev = tmp_path / "events"
    ev.mkdir()
    d1 = [Start(t=T + 1, node="d1", session="s"), Welcome(t=T, node="d1", verifier="v1"),
          Verdict(t=T + 2, node="d1", session="s", round=0, tokens=1)]
    (ev / "d1.jsonl").write_bytes(b"".join(map(encode, d1)) + b'{"t": ')
    (ev / "v1.jsonl").write_bytes(encode(Ready(t=T - 1, node="v1")) + encode(Verify(
        t=T + 2, node="v1", drafter="d1", session="s", round=0)))
    (ev / "verifier.jsonl").write_bytes(encode(Crash(t=T + 3, node="verifier", error="boom")))
    (ev / "links.jsonl").write_bytes(encode(EXAMPLES[-1]) + encode(Link(
        t=T - 2, node="runner", link="d1-ap1", rate_up_mbps=1.0, rate_down_mbps=2.0, delay_ms=0.0, jitter_ms=0.0,
        loss_pct=0.0)))
    run = load_run(tmp_path)
    assert list(run.drafters) == ["d1"] and run.drafters["d1"] == [d1[1], d1[0], d1[2]]     # in time order
    assert [type(e) for e in run.verifiers] == [Ready, Verify, Crash]
    assert [e.node for e in run.links] == ["runner"]                             # channel_late is no link state
    assert len(run.issues) == 1 and run.issues[0].startswith("d1.jsonl: truncated last line skipped")
    assert of_type(run.verifiers, Verify)[0].drafter == "d1"
    assert load_run(tmp_path / "nowhere").issues == [f"{tmp_path / 'nowhere' / 'events'}: no event logs"]
