"""Link-capacity traces: parsing, rate queries, conversions, errors, and the `testbed trace` commands."""
import argparse

import numpy as np
import pytest

from testbed.common.errors import ConfigError
from testbed.channels.tracecli import add_trace_parser
from testbed.channels.traceplot import plot_trace
from testbed.channels.traces import Trace, convert, dump_trace, infer_format, load_trace, parse_trace, save_trace

CSV = "t_s,rate_mbps,delay_ms,loss_pct\n# a comment\n0,10,5,0\n\n1,2,20,1\n3,0,30,2.5   # outage\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- parsing -------------------------------------------------------------------------------------------
def test_csv_parse_and_period(tmp_path):
    t = load_trace(write(tmp_path, "a.csv", CSV))
    assert t.format == "csv" and t.source.endswith("a.csv") and t.loop
    assert t.times_s.tolist() == [0, 1, 3] and t.rates_mbps.tolist() == [10, 2, 0]
    assert t.period_s == 5          # the last row lasts as long as the step before it (3 - 1 = 2 s)
    assert t.bytes_per_period == (10 * 1 + 2 * 2) * 125_000


def test_csv_without_extras_and_single_row():
    t = parse_trace("0,7\n", "csv")
    assert t.period_s == 1.0 and t.extras_at(0.5) == (None, None)
    t = parse_trace("0,7,12\n2,3,15\n", "csv")
    assert t.has_delay and not t.has_loss and t.extras_at(2.5) == (15.0, None)


def test_series_one_column_uses_interval():
    t = parse_trace("3\n0\n4.5\n", "series", interval_s=0.5)
    assert t.times_s.tolist() == [0, 0.5, 1.0] and t.period_s == 1.5
    assert t.rate_between(0.5, 1.0) == 0.0       # rate 0 (an outage) is allowed


def test_series_two_columns_shifted_to_zero():
    t = parse_trace("100 2\n101 4\n103 1\n", "series", source="cooked.mbps")
    assert t.times_s.tolist() == [0, 1, 3] and t.period_s == 5
    assert any("shifted" in n and "100" in n for n in t.notes)


def test_mahimahi_parse():
    t = parse_trace("0\n10\n10\n# our extension: comments\n\n1000\n", "mahimahi")
    assert t.opportunities_ms.tolist() == [0, 10, 10, 1000] and t.period_s == 1.0
    assert t.bytes_per_period == 4 * 1500


@pytest.mark.parametrize("name,fmt", [("x.mahimahi", "mahimahi"), ("x.mm", "mahimahi"), ("up.UP", "mahimahi"),
                                      ("x.down", "mahimahi"), ("x.csv", "csv"), ("x.mbps", "series"),
                                      ("x.series", "series")])
def test_format_from_suffix(name, fmt):
    assert infer_format(name) == fmt


def test_unknown_suffix_asks_for_format(tmp_path):
    path = write(tmp_path, "trace.txt", "5\n")
    with pytest.raises(ConfigError, match="trace.txt.*format"):
        load_trace(path)
    assert load_trace(path, "series").rates_mbps.tolist() == [5]


# --- queries -------------------------------------------------------------------------------------------
def test_rate_between_loops_and_wraps():
    t = parse_trace(CSV, "csv")
    assert t.rate_between(0, 1) == pytest.approx(10)
    assert t.rate_between(0, 5) == pytest.approx(2.8)
    assert t.rate_between(4.5, 5.5) == pytest.approx(5)       # 0.5 s of outage, 0.5 s of the next loop's 10
    assert t.rate_between(1000 * 5 + 1.5, 1000 * 5 + 2.5) == pytest.approx(2)
    assert t.bytes_between(0, 12.5) == pytest.approx(2 * t.bytes_per_period + 10 * 125_000 + 1.5 * 2 * 125_000)


def test_rate_between_once_holds_last_rate():
    t = parse_trace("0,10\n1,4\n", "csv", loop=False)
    assert t.rate_between(0.5, 1.5) == pytest.approx(7)
    assert t.rate_between(50, 60) == pytest.approx(4)
    assert parse_trace("0,10\n1,4\n", "csv").rate_between(2, 3) == pytest.approx(10)


def test_mahimahi_lines_are_packets():
    """N lines in a 1 s window deliver N x 1500 B, i.e. N x 12000 bit/s."""
    t = parse_trace("0\n100\n100\n200\n999\n1000\n", "mahimahi")
    assert t.rate_between(0, 1) == pytest.approx(5 * 12000 / 1e6)
    # From the second loop on, the opportunity at ms 1000 (= the period) plays at each loop's start.
    assert t.rate_between(1, 2) == pytest.approx(6 * 12000 / 1e6)
    assert t.rate_between(7.1, 7.2) == pytest.approx(2 * 12000 / 0.1 / 1e6)
    assert t.bytes_between(0.0995, 0.1005) == 3000            # two packets at ms 100, none before it
    once = parse_trace("0\n100\n100\n200\n999\n1000\n", "mahimahi", loop=False)
    assert once.bytes_between(0, 1.001) == 6 * 1500
    assert once.rate_between(1.001, 100) == 0.0                # no opportunities after the end


def test_mahimahi_cumulative_matches_brute_force():
    rng = np.random.default_rng(1)
    ms = np.sort(rng.integers(0, 700, 40)).tolist() + [700, 700]
    t = Trace.from_opportunities(ms)
    every = np.array([m + k * 700 for k in range(6) for m in ms])   # Mahimahi: ms[i] + k * period
    for q in [0, 0.0005, 0.35, 0.7, 0.7001, 1.4, 2.1234, 3.5]:
        assert t.cumulative_bytes(q) == 1500 * np.sum(every < round(q * 1000, 6)), q


def test_queries_on_hours_long_trace_are_logarithmic():
    """Asked every 100 ms for hours: a query must not touch the whole array (an O(n) copy per call took
    12 ms on a 7.5M-opportunity trace). 2000 queries on 5M opportunities: ~40 ms when O(log n)."""
    import time
    t = Trace.from_opportunities(np.arange(1, 5_000_001, dtype=np.int64))
    start = time.perf_counter()
    rates = [t.rate_between(i * 0.1, i * 0.1 + 0.1) for i in range(0, 200_000, 100)]
    assert time.perf_counter() - start < 1.0
    assert rates[1] == pytest.approx(12.0)        # one packet per ms = 12 Mbit/s


def test_extras_at_loops_and_holds():
    t = parse_trace(CSV, "csv")
    assert t.extras_at(0.2) == (5, 0) and t.extras_at(3) == (30, 2.5) and t.extras_at(6.5) == (20, 1)
    assert parse_trace(CSV, "csv", loop=False).extras_at(6.5) == (30, 2.5)
    assert parse_trace("5\n", "mahimahi").extras_at(1) == (None, None)


def test_empty_interval_is_a_caller_bug():
    with pytest.raises(ValueError):
        parse_trace("0,1\n", "csv").rate_between(2, 2)


# --- round trips ---------------------------------------------------------------------------------------
def _per_second(trace, seconds, start=0.0):
    return np.array([trace.bytes_between(start + k, start + k + 1) for k in range(seconds)])


def test_csv_series_csv_exact(tmp_path):
    src = write(tmp_path, "a.csv", "0,10,5\n1,2.5,7\n2,0.3,9\n3,12,9\n")
    warnings = convert(src, tmp_path / "a.series")
    assert any("delay" in w and "dropped" in w for w in warnings)
    convert(tmp_path / "a.series", tmp_path / "b.csv")
    a, b = load_trace(src), load_trace(tmp_path / "b.csv")
    assert b.period_s == a.period_s == 4
    np.testing.assert_allclose(_per_second(b, 12), _per_second(a, 12), rtol=0, atol=1e-6)


def test_csv_to_series_keeps_bytes_per_bin_and_odd_period(tmp_path):
    """Steps finer than the bins and a period of 3.5 s: bins keep their bytes, and the period survives."""
    a = parse_trace("0,10\n1.25,3\n2.25,6\n", "csv")             # period 3.25 s
    b = parse_trace(dump_trace(a, "series"), "series")
    assert b.period_s == pytest.approx(3.25)
    edges = np.array([0, 1, 2, 3, 3.25])
    ts = np.concatenate([edges + k * 3.25 for k in range(3)])
    np.testing.assert_allclose(b.cumulative_bytes(ts), a.cumulative_bytes(ts), rtol=1e-12)
    c = parse_trace(dump_trace(b, "csv"), "csv")
    np.testing.assert_allclose(c.cumulative_bytes(ts), a.cumulative_bytes(ts), rtol=1e-12)


def test_series_mahimahi_series_within_one_packet(tmp_path):
    src = write(tmp_path, "s.mbps", "3.3\n0.7\n12.1\n5\n0.2\n8\n")
    convert(src, tmp_path / "s.mm")
    a, m = load_trace(src), load_trace(tmp_path / "s.mm")
    assert m.period_s == a.period_s == 6
    steady = _per_second(m, 6, start=6.0)                      # second loop: steady state
    assert np.all(np.abs(steady - _per_second(a, 6)) < 1500)
    assert abs(m.bytes_per_period - a.bytes_per_period) < 1500
    convert(tmp_path / "s.mm", tmp_path / "back.series")
    back = load_trace(tmp_path / "back.series")
    assert np.all(np.abs(_per_second(back, 6) - _per_second(a, 6)) < 1500)
    assert abs(back.bytes_per_period - a.bytes_per_period) < 1500


def test_series_starting_in_outage_keeps_period():
    """A period ends at its last opportunity: one packet moves to the period's end instead of the period
    shrinking (which would drift every loop)."""
    a = parse_trace("0\n4\n2\n", "series")
    text = dump_trace(a, "mahimahi")
    m = parse_trace(text, "mahimahi")
    assert m.period_s == 3 and text.splitlines()[0] != "0"
    assert abs(m.bytes_per_period - a.bytes_per_period) < 1500
    assert m.bytes_between(3, 4) == 1500                        # just the moved packet, at the loop's start
    assert m.rate_between(3.001, 4) == 0.0                      # the outage is kept in every loop


def test_mahimahi_csv_mahimahi_same_opportunities_per_second(tmp_path):
    rng = np.random.default_rng(7)
    ms = np.sort(rng.integers(0, 5000, 3000)).tolist() + [5000]
    src = write(tmp_path, "r.mm", "".join(f"{m}\n" for m in ms))
    assert any("binned" in w for w in convert(src, tmp_path / "r.csv"))
    convert(tmp_path / "r.csv", tmp_path / "r2.mm")
    a, b = load_trace(src), load_trace(tmp_path / "r2.mm")
    assert b.period_s == 5 and len(b.opportunities_ms) == len(ms)
    per_a, per_b = _per_second(a, 5, start=5.0) / 1500, _per_second(b, 5, start=5.0) / 1500
    assert np.all(np.abs(per_a - per_b) <= 1)
    assert dump_trace(a, "mahimahi") == src.read_text()         # mahimahi to mahimahi: unchanged


def test_to_mahimahi_drops_extras_with_warning(tmp_path):
    warnings = convert(write(tmp_path, "a.csv", CSV), tmp_path / "a.up")
    assert any("delay/loss" in w and "mahimahi" in w for w in warnings)
    assert (tmp_path / "a.up").read_text().splitlines()[-1] == "5000"   # the period: 5 s


def test_save_trace_then_load_keeps_extras(tmp_path):
    a = parse_trace(CSV, "csv")
    assert save_trace(a, tmp_path / "copy.csv") == []
    b = load_trace(tmp_path / "copy.csv")
    assert b.extras_at(3.5) == (30, 2.5) and b.period_s == 5


# --- malformed input -----------------------------------------------------------------------------------
BAD = [
    ("x.mm", "1\n2\n12.5x\n3\n", 3, "millisecond timestamp"),
    ("x.mm", "5\n3\n", 2, "must not decrease"),
    ("x.mm", "-1\n5\n", 1, "integer >= 0"),
    ("x.mm", "0\n0\n", 2, "period"),
    ("x.csv", "t_s,rate_mbps\n0,10\n1,nan\n", 3, "finite"),
    ("x.csv", "0,10\n1,inf\n", 2, "finite"),
    ("x.csv", "0,10\n1,5,3\n", 2, "columns"),
    ("x.csv", "t_s,rate\n0,10\n", 1, "header"),
    ("x.csv", "0,10\n2,5\n1,5\n", 3, "increase"),
    ("x.csv", "0,10\n1,5\n1,6\n", 3, "increase"),
    ("x.csv", "1,10\n2,5\n", 1, "t_s = 0"),
    ("x.csv", "0,10,5,100\n", 1, "loss"),
    ("x.csv", "0,-1\n", 1, "rate_mbps"),
    ("x.csv", "0,10001\n", 1, "10000"),
    ("x.csv", "0,10,-5\n", 1, "delay"),
    ("x.csv", "# c\n\n0,10\n1,5,x,y,z\n", 4, "2 to 4"),
    ("x.mbps", "3\n4\nabc\n", 3, "number"),
    ("x.mbps", "3\n4 5\n", 2, "column"),
    ("x.mbps", "1 3\n0.5 4\n", 2, "increase"),
    ("x.mbps", "3\n1e999\n", 2, "finite"),
    ("x.mbps", "1 2 3\n", 1, "fields"),
]


@pytest.mark.parametrize("name,text,line,what", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_malformed_names_file_and_line(tmp_path, name, text, line, what):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as e:
        load_trace(path)
    assert [p.line for p in e.value.problems] == [line]
    assert f"{path}:{line}:" in str(e.value) and what in str(e.value)


@pytest.mark.parametrize("name", ["e.mm", "e.csv", "e.mbps"])
@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_empty_file(tmp_path, name, text):
    with pytest.raises(ConfigError, match=rf"{name}: empty trace"):
        load_trace(write(tmp_path, name, text))


def test_problems_capped_at_twenty(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_trace(write(tmp_path, "bad.mm", "x\n" * 30))
    assert len(e.value.problems) == 21 and "10 more" in e.value.problems[-1].message
    assert [p.line for p in e.value.problems[:20]] == list(range(1, 21))


def test_bad_interval_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="interval_s"):
        parse_trace("1\n", "series", interval_s=0)
    with pytest.raises(ConfigError, match="cannot read"):
        load_trace(tmp_path / "missing.csv")


# --- CLI -----------------------------------------------------------------------------------------------
def run_cli(argv):
    parser = argparse.ArgumentParser(prog="testbed")
    add_trace_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_convert_prints_matching_summaries(tmp_path, capsys):
    src = write(tmp_path, "a.csv", CSV)
    assert run_cli(["trace", "convert", str(src), str(tmp_path / "a.txt"), "--to", "series"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("in:") and lines[1].startswith("out:")
    assert all("5 s per loop" in x and "1,750,000 bytes" in x for x in lines)
    assert "warning:" in err and "dropped" in err


def test_cli_bad_input_raises_config_error(tmp_path):
    with pytest.raises(ConfigError):
        run_cli(["trace", "convert", str(write(tmp_path, "b.csv", "0,x\n")), str(tmp_path / "b.mm")])
    assert not (tmp_path / "b.mm").exists()
    with pytest.raises(SystemExit) as e:
        run_cli(["trace", "show", "x.csv", "--interval", "0"])
    assert e.value.code == 2


def test_cli_plot_and_show(tmp_path, capsys):
    a = write(tmp_path, "a.csv", CSV)
    m = write(tmp_path, "m.down", "0\n3\n3\n500\n")
    out = tmp_path / "p.png"
    assert run_cli(["trace", "plot", str(a), str(m), "-o", str(out), "--duration", "3"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli(["trace", "show", str(m)]) == 0
    shown = capsys.readouterr().out
    assert "0.5 s" in shown and "4 opportunities" in shown and "delay: none" in shown


def test_plot_trace_api(tmp_path):
    path = plot_trace([parse_trace("0\n8\n", "series", loop=False)], tmp_path / "s.png", duration_s=4)
    assert path.exists() and path.stat().st_size > 0


def test_trace_synth_writes_the_same_trace_for_the_same_seed(tmp_path):
    parser = argparse.ArgumentParser()
    add_trace_parser(parser.add_subparsers(dest="command"))

    def synth(out, seed, *extra):
        args = parser.parse_args(["trace", "synth", "vehicular", "-o", str(out), "--duration", "20",
                                  "--seed", str(seed), *extra])
        assert args.func(args) == 0
        return out.read_text()
    a, b, c = synth(tmp_path / "a.csv", 1), synth(tmp_path / "b.csv", 1), synth(tmp_path / "c.csv", 2)
    assert a == b and a != c
    t = load_trace(tmp_path / "a.csv")
    assert t.period_s == pytest.approx(20) and len(t.times_s) == 200 and t.has_loss and not t.has_delay
    assert t.extras_at(3.0)[0] is None                  # empty delay field: the link keeps its own delay
    synth(tmp_path / "a.up", 1, "--no-loss")            # mahimahi keeps the delivered bytes
    m = load_trace(tmp_path / "a.up")
    assert abs(m.bytes_per_period - t.bytes_per_period) <= 1500
