"""nodes.protocol: round trips, one test per validation rule, and a fuzzer. No sockets, a few seconds."""
import math
import pickle
import random
import struct
import time

import msgpack
import numpy as np
import pytest

from nodes import protocol as P
from nodes.backends import DraftToken
from nodes.protocol import (MAX_FRAME, Draft, End, Error, Hello, ProtocolError, Start, Verdict, Welcome,
                            decode, describe, encode, make_error_frame)

VOCAB = 32000
DELETE = object()


# ---- realistic sample messages ------------------------------------------------------------------------------
def topk_tokens(gamma=5, k=4, vocab=VOCAB, seed=1):
    """What a top-k drafter produces: k distinct ids per token, renormalised probs, sampled token in the row."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(gamma):
        ids = rng.choice(vocab, size=k, replace=False).astype(np.int32)
        p = np.sort(rng.dirichlet(np.ones(k)))[::-1].astype(np.float32)
        p /= p.sum()
        out.append(DraftToken(int(ids[rng.integers(k)]), ids, p))
    return out


def full_tokens(gamma=3, vocab=1000, seed=2):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(gamma):
        logits = rng.normal(size=vocab) * 3
        p = np.exp(logits - logits.max())
        p = (p / p.sum()).astype(np.float32)
        out.append(DraftToken(int(rng.choice(vocab, p=p / p.sum())), None, p))
    return out


def samples():
    return {
        "hello": Hello("drafter-0", "Qwen/Qwen2.5-0.5B-Instruct", "sha256:9f86d081884c7d65", 151936,
                       ["ids", "topk:8", "full"], True),
        "welcome": Welcome("verifier", "Qwen/Qwen2.5-7B-Instruct", "sha256:9f86d081884c7d65", 151936),
        "start": Start("d0.s17", np.arange(1, 200, dtype=np.int32) * 13, 256, 0.8, "topk:4", 1234, 4, 1700000000.25),
        "draft_ids": Draft.from_tokens("d0.s17", 3, 210, [DraftToken(t) for t in (5, 17, 31999, 0)], "ids",
                                       VOCAB, 1700000000.5),
        "draft_topk": Draft.from_tokens("d0.s17", 4, 215, topk_tokens(), "topk:4", VOCAB, 1700000001.0),
        "draft_full": Draft.from_tokens("d0.s17", 5, 220, full_tokens(), "full", 1000, 1700000001.5),
        "draft_empty": Draft.from_tokens("d0.s17", 0, 199, [], "topk:4", VOCAB, 1700000000.0),
        "verdict": Verdict("d0.s17", 4, 3, 4242, 5, False, 1700000001.1, 0.002, 0.031, 3),
        "end": End("d0.s17", "max_new"),
        "error": Error("bad_field", "draft.k: must be >= 1 in topk mode", "d0.s17"),
        "error_nosession": Error("bad_frame", "not a valid msgpack frame"),
    }


SAMPLES = samples()


def frame_with(name, changes=None, **kw):
    """The sample's wire map with fields replaced (or removed with DELETE), packed without validation."""
    d = SAMPLES[name].to_wire()
    for k, v in {**(changes or {}), **kw}.items():
        if v is DELETE:
            d.pop(k, None)
        else:
            d[k] = v
    return msgpack.packb(d, use_bin_type=True)


def rejects(frame, code, *needles):
    with pytest.raises(ProtocolError) as ei:
        decode(frame)
    assert ei.value.code == code, ei.value
    for n in needles:
        assert n in ei.value.message, (n, ei.value.message)
    return ei.value


def i32(*xs):
    return np.array(xs, dtype="<i4").tobytes()


def f32(*xs):
    return np.array(xs, dtype="<f4").tobytes()


def pack_pairs(pairs, raw=None):
    """A map frame from (key, value) pairs, in that order, repeats allowed; `raw` maps keys to values that are
    already packed (for what msgpack.packb will not build, like a thousand nested lists)."""
    pk = msgpack.Packer(use_bin_type=True)
    return pk.pack_map_header(len(pairs)) + b"".join(
        pk.pack(k) + (raw[k] if raw and k in raw else pk.pack(v)) for k, v in pairs)


# ---- round trips -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name):
    msg = SAMPLES[name]
    frame = encode(msg)
    back = decode(frame)
    assert type(back) is type(msg) and back == msg
    assert encode(back) == frame
    assert describe(back).startswith(msg.TYPE.upper())
    for v in vars(back).values():
        if isinstance(v, np.ndarray):   # read-only, owns its memory (or is a view of an owned copy)
            assert not v.flags.writeable
            assert (v if v.base is None else v.base).flags.owndata
            assert v.dtype == np.dtype("<i4") or v.dtype == np.dtype("<f4")


@pytest.mark.parametrize("payload,make", [("topk:4", topk_tokens), ("full", full_tokens)])
def test_draft_tokens_round_trip(payload, make):
    toks = make()
    vocab = VOCAB if payload != "full" else 1000
    msg = decode(encode(Draft.from_tokens("s", 0, 1, toks, payload, vocab, 0.0)))
    assert msg.payload == payload and msg.gamma == len(toks)
    assert msg.q_probs.shape == (len(toks), 4 if payload == "topk:4" else 1000)
    for a, b in zip(toks, msg.draft_tokens()):
        assert a.token == b.token
        np.testing.assert_array_equal(a.q_probs, b.q_probs)
        if payload == "topk:4":
            np.testing.assert_array_equal(a.q_ids, b.q_ids)
        else:
            assert b.q_ids is None


def test_wire_uses_raw_little_endian_buffers():
    d = msgpack.unpackb(encode(SAMPLES["draft_topk"]), raw=False)
    assert isinstance(d["tokens"], bytes) and isinstance(d["q_ids"], bytes) and isinstance(d["q_probs"], bytes)
    assert np.frombuffer(d["tokens"], "<i4").tolist() == SAMPLES["draft_topk"].tokens.tolist()
    assert len(d["q_probs"]) == 5 * 4 * 4 and d["v"] == P.PROTOCOL_VERSION and d["type"] == "draft" and d["k"] == 4
    assert msgpack.unpackb(encode(SAMPLES["draft_ids"]), raw=False)["q_probs"] is None


def test_ints_are_accepted_for_floats_and_numpy_scalars_are_normalised():
    assert decode(frame_with("verdict", t_send=5, queue_s=0)).t_send == 5.0
    v = Verdict("s", np.int64(1), np.int32(2), np.int64(3), 4, np.bool_(True), np.float32(1.5), 0, 0, 1)
    assert type(v.round) is int and type(v.done) is bool and type(v.t_send) is float
    assert decode(encode(v)) == v


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_frames_are_exactly_what_msgpack_packs_from_to_wire(name):
    # The wire format is the spec's, not an encoder's: "v", "type", then the fields in order, as msgpack packs
    # the map, so peers with another encoder (or an older version of this module) send identical bytes.
    assert encode(SAMPLES[name]) == msgpack.packb(SAMPLES[name].to_wire(), use_bin_type=True)


def test_messages_are_immutable():
    with pytest.raises(AttributeError):
        SAMPLES["verdict"].round = 5
    with pytest.raises(ValueError):
        SAMPLES["draft_topk"].tokens[0] = 1


def test_constructor_copies_caller_arrays():
    prompt = np.array([1, 2, 3], dtype=np.int64)
    s = Start("s", prompt, 5, 0.0, "ids", 0, 4, 0.0)
    prompt[0] = 99
    assert s.prompt.tolist() == [1, 2, 3] and not s.prompt.flags.writeable


# ---- framing, version, type --------------------------------------------------------------------------------
@pytest.mark.parametrize("frame,code,needle", [
    (b"", "bad_frame", "msgpack"),
    (b"\xc1", "bad_frame", "msgpack"),                               # never-used msgpack byte
    (encode(End("s", "eos")) + b"\x00", "bad_frame", "ExtraData"),    # trailing junk
    (msgpack.packb([1, 2]), "bad_frame", "map"),
    (msgpack.packb("hello"), "bad_frame", "map"),
    (msgpack.packb({1: 2}), "bad_frame", "msgpack"),                  # int keys (strict_map_key)
    (msgpack.packb({"v": P.PROTOCOL_VERSION, "type": "end", "session": "s", "reason": "x", "e": msgpack.ExtType(5, b"ab")}),
     "bad_frame", "max_ext_len"),
    ("not bytes", "bad_frame", "bytes"),
    (None, "bad_frame", "bytes"),
    (frame_with("end", v=DELETE), "bad_version", "v"),
    (frame_with("end", v=99), "bad_version", "got 99"),
    (frame_with("end", v=True), "bad_version", "True"),
    (frame_with("end", v="1"), "bad_version", "v"),
    (frame_with("end", v=1.0), "bad_version", "v"),
    (frame_with("end", type=DELETE), "bad_type", "type"),
    (frame_with("end", type="prompt"), "bad_type", "'prompt'"),
    (frame_with("end", type=3), "bad_type", "type"),
    (frame_with("end", type=b"end"), "bad_type", "type"),
])
def test_bad_frames(frame, code, needle):
    rejects(frame, code, needle)


def test_oversized_frame_rejected_before_unpacking(monkeypatch):
    monkeypatch.setattr(msgpack, "unpackb", lambda *a, **k: pytest.fail("unpacked an oversized frame"))
    rejects(b"\x80" * (MAX_FRAME + 1), "bad_frame", "MAX_FRAME")
    rejects(memoryview(bytearray(MAX_FRAME + 1)), "bad_frame", "MAX_FRAME")


def test_bytearray_and_memoryview_frames_decode():
    frame = encode(SAMPLES["draft_topk"])
    assert decode(bytearray(frame)) == decode(memoryview(frame)) == SAMPLES["draft_topk"]


def test_keys_in_any_order_and_repeated_keys_decode_as_any_msgpack_map():
    d = SAMPLES["draft_topk"].to_wire()
    assert decode(pack_pairs(list(d.items())[::-1])) == SAMPLES["draft_topk"]            # "v" and "type" last
    assert decode(b"\xde\x00\x0c" + pack_pairs(list(d.items()))[1:]) == SAMPLES["draft_topk"]   # map16 header
    # a repeated key: the last value counts, but every value must be legal msgpack within the limits
    assert decode(pack_pairs([("round", "junk"), ("v", 2)] + list(d.items()))) == SAMPLES["draft_topk"]
    rejects(pack_pairs([("round", msgpack.ExtType(1, b"x"))] + list(d.items())), "bad_frame", "max_ext_len")
    rejects(pack_pairs([("session", "s" * 9000)] + list(d.items())), "bad_frame", "max_str_len")
    rejects(pack_pairs(list(d.items()) + [("k", 4)] * 21), "bad_frame", "max_map_len")
    rejects(pack_pairs(list(d.items()) + [("type", "verdict")]), "bad_field", "verdict: missing field(s)")


def test_the_first_rule_broken_in_the_spec_order_names_the_error():
    # framing, then v, then type, then keys, then each field (byte lengths before values), then cross-field
    rejects(frame_with("draft_topk", k=5) + b"\x00", "bad_frame", "ExtraData")
    rejects(frame_with("draft_topk", k=5, v=DELETE), "bad_version", "v: expected 3, got None")
    rejects(frame_with("draft_topk", k=True, type="drift"), "bad_type", "'drift'")
    rejects(frame_with("draft_topk", k=5, rtt_s=DELETE, zz=1), "bad_field", "draft: missing field(s) rtt_s")
    rejects(frame_with("draft_topk", k=5, zz=1), "bad_field", "draft: unknown field(s) 'zz'")
    rejects(frame_with("draft_topk", k=5, round=-1), "bad_field", "draft.round: -1 out of range")
    rejects(frame_with("draft_topk", q_ids=i32(*[-1] * 20), q_probs=b"\x00" * 9), "bad_field",
            "draft.q_probs: byte length 9")
    rejects(frame_with("draft_topk", q_ids=i32(*[-1] * 20), k=5), "bad_field", "draft.q_ids: ids must be in 0..")
    rejects(frame_with("draft_topk", k=5, t_send=-1.0), "bad_field", "draft.t_send: -1.0 out of range")


def test_deeply_nested_values_are_refused_as_protocol_errors():
    # legal msgpack the unpacker accepts; the error message must not recurse through it (nor be huge)
    deep = b"\x91" * 1000 + b"\xc0"
    d = SAMPLES["start"].to_wire()
    e = rejects(pack_pairs(list(d.items()), raw={"payload": deep}), "bad_field", "start.payload: [[[[")
    assert len(e.message) < 200
    d = SAMPLES["hello"].to_wire()
    rejects(pack_pairs(list(d.items()), raw={"payloads": b"\x92" + deep + deep}), "bad_field", "hello.payloads")
    rejects(pack_pairs(list(d.items()), raw={"payloads": b"\x91" * 5000 + b"\xc0"}), "bad_frame")


def test_errors_carry_the_session_when_the_frame_names_one():
    assert rejects(frame_with("verdict", round=-1), "bad_field").session == "d0.s17"
    assert rejects(frame_with("verdict", round=-1, session="bad session"), "bad_field").session is None


# ---- field validation: each rule, the right code, the field named ------------------------------------------
BIG_PROMPT = np.zeros(P.MAX_PROMPT + 1, "<i4").tobytes()
CASES = [
    # keys
    ("end", dict(reason=DELETE), "end: missing field(s) reason"),
    ("verdict", dict(batch=DELETE, done=DELETE), "missing field(s) done, batch"),
    ("end", dict(extra=1), "unknown field(s) 'extra'"),
    ("end", {b"session2": "x"}, "unknown field(s) b'session2'"),
    # bool is not int, ints must be ints
    ("draft_ids", dict(round=True), "draft.round: expected int, got bool"),
    ("draft_ids", dict(base=3.0), "draft.base: expected int, got float"),
    ("verdict", dict(token="7"), "verdict.token: expected int, got str"),
    ("start", dict(seed=None), "start.seed: expected int"),
    ("verdict", dict(done=1), "verdict.done: expected bool, got int"),
    ("hello", dict(proactive="yes"), "hello.proactive: expected bool"),
    # floats: finite, typed, ranged
    ("start", dict(temperature=math.nan), "start.temperature: must be finite"),
    ("draft_ids", dict(t_send=math.inf), "draft.t_send: must be finite"),
    ("verdict", dict(queue_s=-math.inf), "verdict.queue_s: must be finite"),
    ("verdict", dict(verify_s="0.1"), "verdict.verify_s: expected float, got str"),
    ("verdict", dict(t_send=False), "verdict.t_send: expected float, got bool"),
    ("verdict", dict(queue_s=-0.5), "verdict.queue_s: -0.5 out of range"),
    ("start", dict(temperature=100.5), "start.temperature: 100.5 out of range"),
    ("start", dict(temperature=-0.1), "start.temperature: -0.1 out of range"),
    # strings
    ("end", dict(session=""), "end.session: length 0"),
    ("end", dict(session="s" * 65), "end.session: length 65"),
    ("end", dict(session="a b"), "end.session: 'a b' does not match"),
    ("end", dict(session="../etc"), "end.session: '../etc' does not match"),
    ("end", dict(session=b"s1"), "end.session: expected str, got bytes"),
    ("hello", dict(drafter="d" * 129), "hello.drafter: length 129"),
    ("hello", dict(model="m" * 129), "hello.model: length 129"),
    ("hello", dict(tokenizer=""), "hello.tokenizer: length 0"),
    ("welcome", dict(model="evil\nINFO forged"), "welcome.model: contains control characters"),
    ("error", dict(message="x" * 1025), "error.message: length 1025"),
    ("error", dict(code="bad code"), "error.code"),
    ("error", dict(session=7), "error.session: expected str"),
    ("end", dict(reason=""), "end.reason: length 0"),
    # int ranges
    ("draft_ids", dict(round=-1), "draft.round: -1 out of range"),
    ("draft_ids", dict(base=0), "draft.base: 0 out of range"),
    ("start", dict(gamma=65), "start.gamma: 65 out of range"),
    ("start", dict(gamma=-1), "start.gamma: -1 out of range"),
    ("start", dict(max_new=0), "start.max_new: 0 out of range"),
    ("start", dict(max_new=100_001), "start.max_new: 100001 out of range"),
    ("start", dict(seed=-1), "start.seed: -1 out of range"),
    ("verdict", dict(token=-1), "verdict.token: -1 out of range"),
    ("verdict", dict(accepted=65), "verdict.accepted: 65 out of range"),
    ("verdict", dict(next_gamma=65), "verdict.next_gamma: 65 out of range"),
    ("verdict", dict(batch=0), "verdict.batch: 0 out of range"),
    ("hello", dict(vocab_size=0), "hello.vocab_size: 0 out of range"),
    ("welcome", dict(vocab_size=10_000_001), "welcome.vocab_size: 10000001 out of range"),
    ("draft_topk", dict(k=1025), "draft.k: 1025 out of range"),
    ("draft_ids", dict(round=2**64 - 1), "draft.round"),
    # payloads
    ("start", dict(payload="topk:0"), "start.payload: 'topk:0' is not"),
    ("start", dict(payload="topk:1025"), "start.payload: 'topk:1025' is not"),
    ("start", dict(payload="topk:04"), "start.payload"),
    ("start", dict(payload="topk:-4"), "start.payload"),
    ("start", dict(payload="sparse"), "start.payload"),
    ("start", dict(payload="ids", temperature=0.7), "start.payload: 'ids' only works with temperature 0"),
    ("hello", dict(payloads=[]), "hello.payloads: need 1..8 distinct payloads"),
    ("hello", dict(payloads=["ids", "ids"]), "hello.payloads: need 1..8 distinct"),
    ("hello", dict(payloads="ids"), "hello.payloads: expected list, got str"),
    ("hello", dict(payloads=["ids", "topk:2000"]), "hello.payloads[1]"),
    ("hello", dict(payloads=["ids", 4]), "hello.payloads[1]"),
    # byte buffers: type, length multiple of 4, shapes
    ("start", dict(prompt=[1, 2, 3]), "start.prompt: expected raw <i4 bytes, got list"),
    ("start", dict(prompt="abcd"), "start.prompt: expected raw <i4 bytes, got str"),
    ("start", dict(prompt=b"\x01\x00\x00"), "start.prompt: byte length 3 is not a multiple of 4"),
    ("start", dict(prompt=b""), "start.prompt: need 1..32768 tokens"),
    ("start", dict(prompt=BIG_PROMPT), "start.prompt: need 1..32768 tokens"),
    ("start", dict(prompt=i32(1, -5)), "start.prompt: ids must be in 0.."),
    ("start", dict(prompt=None), "start.prompt: expected raw <i4 bytes, got NoneType"),
    ("draft_ids", dict(tokens=i32(*range(65))), "draft.tokens: need 0..64 tokens"),
    ("draft_ids", dict(tokens=b"\x00" * 6), "draft.tokens: byte length 6"),
    ("draft_ids", dict(tokens=i32(3, -1)), "draft.tokens: ids must be in 0.."),
    ("draft_ids", dict(k=2), "draft.k: must be 0 when the draft carries no q"),
    ("draft_ids", dict(q_ids=i32(1, 2, 3, 4)), "draft.q_probs: required when q_ids is present"),
    ("draft_topk", dict(q_ids=b"\x00" * 7), "draft.q_ids: byte length 7"),
    ("draft_topk", dict(q_probs=b"\x00" * 9), "draft.q_probs: byte length 9"),
    ("draft_topk", dict(q_ids=[1, 2]), "draft.q_ids: expected raw <i4 bytes, got list"),
    ("draft_topk", dict(k=0), "draft.k: must be >= 1 in topk mode"),
    ("draft_topk", dict(k=5), "draft.q_ids: has shape (20,), want gamma*k = 5*5"),
    ("draft_topk", dict(q_ids=i32(*range(16))), "draft.q_ids: has shape (16,), want gamma*k = 5*4"),
    ("draft_topk", dict(q_probs=f32(*[0.25] * 24)), "draft.q_probs: has shape (24,), want gamma*k = 5*4"),
    ("draft_topk", dict(tokens=i32(1, 2, 3)), "draft.q_ids: has shape (20,), want gamma*k = 3*4"),
    ("draft_full", dict(k=4), "draft.k: must be 0 in full mode"),
    ("draft_full", dict(q_probs=f32(*[0.001] * 2999)), "draft.q_probs: shape (2999,) is not gamma=3 rows"),
    ("draft_full", dict(tokens=i32(1, 2, 1000), q_probs=f32(*[0.001] * 3000)), "draft.tokens: token id >= vocab"),
    ("draft_empty", dict(q_probs=f32(1.0)), "draft.q_probs: an empty draft (gamma 0) carries no q"),
    # fields with a default in Python are still required on the wire
    ("draft_topk", dict(draft_s=DELETE), "draft: missing field(s) draft_s"),
    ("draft_ids", dict(draft_s=DELETE, rtt_s=DELETE), "draft: missing field(s) draft_s, rtt_s"),
    ("verdict", dict(load=DELETE), "verdict: missing field(s) load"),
    ("error", dict(session=DELETE), "error: missing field(s) session"),
]


@pytest.mark.parametrize("name,changes,needle", CASES, ids=[c[2][:50] for c in CASES])
def test_field_rules(name, changes, needle):
    rejects(frame_with(name, changes), "bad_field", needle)


# probabilities: derived from the topk sample so only one rule is broken at a time
def topk_frame(edit):
    m = SAMPLES["draft_topk"]
    ids, probs, toks = m.q_ids.copy(), m.q_probs.copy(), m.tokens.copy()
    edit(ids, probs, toks)
    return frame_with("draft_topk", q_ids=ids.tobytes(), q_probs=probs.tobytes(), tokens=toks.tobytes())


def _col(ids, toks, j, other=False):
    """Column of row j holding the drafted token (or, with other=True, some other column)."""
    c = int(np.nonzero(ids[j] == toks[j])[0][0])
    return (c + 1) % ids.shape[1] if other else c


@pytest.mark.parametrize("edit,needle", [
    (lambda i, p, t: p.__setitem__((1, 0), np.nan), "draft.q_probs: probabilities must be finite and in [0, 1]"),
    (lambda i, p, t: p.__setitem__((1, 0), np.inf), "draft.q_probs: probabilities must be finite"),
    (lambda i, p, t: (p.__setitem__((0, _col(i, t, 0, True)), -0.1)), "draft.q_probs: probabilities must be"),
    (lambda i, p, t: p.__setitem__((2, 0), 1.5), "draft.q_probs: probabilities must be finite and in [0, 1]"),
    (lambda i, p, t: p.__setitem__(3, p[3] * 0.9), "draft.q_probs: row 3 sums to 0.9"),
    (lambda i, p, t: p.__setitem__(0, p[0] * 1.01), "draft.q_probs: row 0 sums to 1.01"),
    (lambda i, p, t: i.__setitem__((2, 1), i[2, 0]), "draft.q_ids: a row repeats a token id"),
    (lambda i, p, t: t.__setitem__(1, 31999 if 31999 not in i[1] else 31998), "draft.tokens: token 1 is not among"),
    (lambda i, p, t: i.__setitem__((0, 0), -3), "draft.q_ids: ids must be in 0.."),
])
def test_probability_rules(edit, needle):
    rejects(topk_frame(edit), "bad_field", needle)


def test_q_of_drafted_token_must_be_positive():
    def edit(ids, probs, toks):
        c = _col(ids, toks, 2)
        probs[2, c] = 0.0
        probs[2] /= probs[2].sum()
    rejects(topk_frame(edit), "bad_field", "draft.q_probs: q of drafted token 2 is 0")
    full = SAMPLES["draft_full"]
    probs = full.q_probs.copy()
    probs[0, full.tokens[0]] = 0.0
    probs[0] /= probs[0].sum()
    rejects(frame_with("draft_full", q_probs=probs.tobytes()), "bad_field", "q of drafted token 0 is 0")


def test_row_sum_tolerance_is_1e_3():
    ok = topk_frame(lambda i, p, t: p.__setitem__(0, p[0] * 1.0009))
    assert decode(ok).round == 4


# ---- building messages in Python validates too -------------------------------------------------------------
def test_constructors_validate():
    with pytest.raises(ProtocolError, match="verdict.accepted"):
        Verdict("s", 0, -1, 1, 1, False, 0.0, 0.0, 0.0, 1)
    with pytest.raises(ProtocolError, match="start.prompt: expected an array of int ids"):
        Start("s", np.array([1.5, 2.0]), 5, 0.0, "ids", 0, 4, 0.0)
    with pytest.raises(ProtocolError, match="start.prompt: ids must be in"):
        Start("s", np.array([2**31]), 5, 0.0, "ids", 0, 4, 0.0)
    with pytest.raises(ProtocolError, match="draft.q_probs: expected an array of float probabilities"):
        Draft("s", 0, 1, np.array([1]), np.array([[1]]), np.array([[1]]), 1, 0.0)
    with pytest.raises(ProtocolError, match="hello.payloads"):
        Hello("d", "m", "t", 10, ["topk"], False)
    with pytest.raises(ProtocolError, match="hello.model: is not valid UTF-8"):
        Hello("d", "m\ud800", "t", 10, ["ids"], False)
    with pytest.raises(ProtocolError, match=r"draft.q_probs: has shape \(4, 2\), want gamma\*k = 2\*4"):
        Draft("s", 0, 1, np.array([1, 2]), np.array([[1, 2, 3, 4]] * 2), np.full((4, 2), 0.25), 4, 0.0)
    with pytest.raises(ProtocolError, match=r"draft.q_probs: shape \(3, 2\) is not gamma=2 rows"):
        Draft("s", 0, 1, np.array([1, 0]), None, np.full((3, 2), 0.5), 0, 0.0)


def test_from_tokens_validates_against_the_vocabulary_and_payload():
    toks = topk_tokens(gamma=2, k=4)
    with pytest.raises(ProtocolError, match=r"draft.q_ids\[0\]: topk:8 needs 8 entries per token, got 4"):
        Draft.from_tokens("s", 0, 1, toks, "topk:8", VOCAB, 0.0)
    with pytest.raises(ProtocolError, match="draft.tokens: token id 40000 >= vocab_size"):
        Draft.from_tokens("s", 0, 1, [DraftToken(40000)], "ids", VOCAB, 0.0)
    with pytest.raises(ProtocolError, match="draft.q_ids: token id .* >= vocab_size 100"):
        Draft.from_tokens("s", 0, 1, [DraftToken(1, np.array([1, 500]), np.array([0.5, 0.5]))], "topk:2", 100, 0.0)
    with pytest.raises(ProtocolError, match=r"draft.q_probs\[0\]: full needs 1000 entries per token, got None"):
        Draft.from_tokens("s", 0, 1, [DraftToken(1)], "full", 1000, 0.0)
    with pytest.raises(ProtocolError, match=r"draft.q_ids\[1\]"):
        Draft.from_tokens("s", 0, 1, [toks[0], DraftToken(toks[1].token, None, toks[1].q_probs)], "topk:4",
                          VOCAB, 0.0)
    with pytest.raises(ProtocolError, match="draft.payload"):
        Draft.from_tokens("s", 0, 1, toks, "topk", VOCAB, 0.0)
    # ids mode drops q; an empty draft carries none whatever the payload
    assert Draft.from_tokens("s", 0, 1, toks, "ids", VOCAB, 0.0).q_probs is None
    assert Draft.from_tokens("s", 0, 1, [], "full", VOCAB, 0.0).payload == "ids"


def test_encode_rejects_non_messages_and_oversized_frames():
    with pytest.raises(TypeError):
        encode({"v": P.PROTOCOL_VERSION, "type": "end"})
    # 64 rows of a 300k vocabulary in float32 = 73 MiB > MAX_FRAME
    big = np.full((64, 300_000), 1 / 300_000, dtype=np.float32)
    msg = Draft("s", 0, 1, np.zeros(64, np.int32), None, big, 0, 0.0)
    with pytest.raises(ProtocolError) as ei:
        encode(msg)
    assert ei.value.code == "bad_frame" and "MAX_FRAME" in ei.value.message


# ---- error frames and logging ------------------------------------------------------------------------------
def test_make_error_frame():
    try:
        decode(frame_with("verdict", batch=0))
    except ProtocolError as e:
        err = decode(make_error_frame(e))
    assert err == Error("bad_field", err.message, "d0.s17") and "verdict.batch" in err.message
    err = decode(make_error_frame(KeyError("line1\nline2" + "x" * 5000), session="s9"))
    assert err.code == "internal" and err.session == "s9" and "\n" not in err.message and len(err.message) == 1024
    err = decode(make_error_frame(RuntimeError(), session="not a session"))
    assert err.message == "RuntimeError: " and err.session is None
    assert decode(make_error_frame(OSError("bad \udcff name"))).message == "OSError: bad ? name"

    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no")
    assert decode(make_error_frame(Unprintable())).message == "unprintable Unprintable"


def test_describe():
    assert describe(SAMPLES["draft_topk"]) == ("DRAFT session=d0.s17 round=4 base=215 tokens=5 q_ids=5x4 q_probs=5x4 "
                                               "k=4 t_send=1.7e+09 draft_s=0 rtt_s=0 payload=topk:4")
    assert "payloads=ids,topk:8,full" in describe(SAMPLES["hello"])


# ---- never pickle ------------------------------------------------------------------------------------------
def test_decoding_never_unpickles(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("pickle used")
    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, boom)
    monkeypatch.setattr(np, "load", boom)
    assert "pickle" not in vars(P)
    payloads = [SAMPLES["end"], SAMPLES["end"].to_wire(), {"v": P.PROTOCOL_VERSION, "type": "end"}, np.arange(4)]
    for obj in payloads:
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            rejects(pickle.dumps(obj, protocol=proto), "bad_frame")
    for name in SAMPLES:   # ordinary decoding paths run with pickle disabled too
        decode(encode(SAMPLES[name]))


# ---- fuzz --------------------------------------------------------------------------------------------------
def _junk(rng, depth=0):
    r = rng.random()
    if r < 0.12:
        return rng.choice([0, 1, -1, True, False, None, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 65, 1025])
    if r < 0.22:
        return rng.choice([math.nan, math.inf, -math.inf, -0.0, 1e308, 0.5, 3.0, -1.0])
    if r < 0.34:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x2FFF)]))
                       for _ in range(rng.choice([0, 1, 5, 64, 65, 129, 1025])))
    if r < 0.36:
        return rng.choice(["ids", "full", "topk:4", "topk:0", "draft", "end", "hello"])
    if r < 0.55:
        n = rng.choice([0, 1, 3, 4, 8, 16, 20, 80, 4000])
        if rng.random() < 0.5:
            return np.frombuffer(rng.randbytes(n - n % 4), "<f4").astype("<f4").tobytes()
        return rng.randbytes(n)
    if r < 0.65:
        if rng.random() < 0.3:   # ext type -1, which msgpack decodes to a Timestamp object
            return msgpack.Timestamp(rng.randrange(2**32), rng.randrange(10**9))
        return msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randrange(5)))
    if depth > 3:
        return None
    if r < 0.85:
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {rng.choice(["v", "type", "k", "x", "session"]): _junk(rng, depth + 1) for _ in range(rng.randrange(4))}


HUGE_HEADERS = [b"\xdf\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
                b"\xc9\xff\xff\xff\xff\x01", b"\xde\xff\xff", b"\xdc\xff\xff", b"\xda\xff\xff", b"\xc5\xff\xff",
                b"\xc6\x04\x00\x00\x01", b"\xdb\x00\x10\x00\x00"]


def _fuzz_frame(rng, valid):
    kind = rng.randrange(8)
    base = rng.choice(valid)
    if kind == 0:                                   # random bytes, sometimes shaped like a map
        prefix = rng.choice([b"", b"\x81", b"\x8a", b"\xde\x00\x10"])
        return prefix + rng.randbytes(rng.randrange(64))
    if kind == 1:                                   # truncated valid frame
        return base[:rng.randrange(len(base))]
    if kind == 2:                                   # byte flips in a valid frame
        b = bytearray(base)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 3:                                   # huge declared lengths, bare or inside a map
        h = rng.choice(HUGE_HEADERS) + rng.randbytes(rng.randrange(8))
        return rng.choice([h, b"\x83\xa1v\x01\xa4type\xa5draft\xa6tokens" + h])
    if kind == 4:                                   # nested junk, sometimes very deep
        depth = rng.choice([10, 100, 1000, 5000])
        return rng.choice([b"\x91", b"\x81\xa1x"]) * depth + b"\xc0"
    d = msgpack.unpackb(base, raw=False)
    if kind == 5 or kind == 6:                      # one field to a random type / value
        d[rng.choice(list(d))] = _junk(rng)
    else:                                           # add, drop or rename a key
        op = rng.randrange(3)
        key = rng.choice(list(d))
        if op == 0:
            d[rng.choice(["x", "V", "Type", key + "_"])] = _junk(rng)
        elif op == 1:
            del d[key]
        else:
            d[key.upper()] = d.pop(key)
    return msgpack.packb(d, use_bin_type=True)


def test_fuzz_decode_only_raises_protocol_error():
    rng = random.Random(20240601)
    valid = [encode(m) for m in SAMPLES.values()]
    valid += [encode(Draft.from_tokens("f", 1, 9, topk_tokens(gamma=g, k=k, vocab=50, seed=g), f"topk:{k}", 50, 1.0))
              for g, k in ((1, 1), (3, 2), (8, 8))]
    valid += [encode(Draft.from_tokens("f", 1, 9, full_tokens(gamma=2, vocab=16), "full", 16, 1.0))]
    t0, n, ok, codes = time.perf_counter(), 12_000, 0, {}
    for i in range(n):
        frame = _fuzz_frame(rng, valid)
        try:
            msg = decode(frame)
        except ProtocolError as e:
            assert e.code in ("bad_frame", "bad_version", "bad_type", "bad_field"), e
            assert e.message and len(e.message) < 2000
            codes[e.code] = codes.get(e.code, 0) + 1
            continue
        except Exception as e:  # noqa: BLE001  the point of the test
            pytest.fail(f"frame #{i} {frame[:120]!r}: {type(e).__name__}: {e}")
        ok += 1
        assert decode(encode(msg)) == msg   # whatever decodes is a valid message
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, f"{n} frames took {elapsed:.1f}s"
    assert set(codes) == {"bad_frame", "bad_version", "bad_type", "bad_field"} and ok > 0, (codes, ok)


def test_fuzz_struct_sanity():
    # a hand-made header: map of 1 with a bin32 declaring 2 GiB and 3 bytes of data
    frame = b"\x81\xa6tokens" + b"\xc6" + struct.pack(">I", 2**31) + b"abc"
    rejects(frame, "bad_frame")
