"""nodes.compute: profiles as data, the roofline pass model, measured tables, and the published-points check."""
from pathlib import Path

import pytest

from nodes.compute import (CostModel, LinearCost, ProfileError, RooflineCost, TableCost, cost_model_from_spec,
                           get_device, get_model, load_devices, load_models)
from nodes.compute.published import median_abs_error, published_table

REQUIRED_DEVICES = ["h100-sxm", "h200", "a100-80gb", "a40", "l4", "rtx-3080", "rtx-4500-ada", "rtx-4090",
                    "jetson-agx-orin", "jetson-orin-nano", "raspberry-pi-5", "cpu-x86"]
REQUIRED_MODELS = ["qwen3-0.6b", "qwen3-1.7b", "qwen3-14b", "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b",
                   "llama-3.1-70b", "llama-3.1-70b-awq", "llama-2-7b", "llama-2-70b", "llama-68m", "tinyllama-1.1b",
                   "llama-13b", "smollm2-135m", "smollm2-360m", "smollm2-1.7b", "gemma-3-270m"]


def roofline(device, model, dtype=None):
    return RooflineCost(get_device(device), get_model(model), dtype)


def decode_tok_s(cost, context=128):
    return 1 / cost.pass_s([(context, 1)])


# ------------------------------------------------------------------------------------------------ data

def test_every_required_profile_is_there_with_a_source():
    devices, models = load_devices(), load_models()
    assert set(REQUIRED_DEVICES) <= set(devices)
    assert set(REQUIRED_MODELS) <= set(models)
    for d in devices.values():
        assert d.source.startswith("https://") and d.peak_flops["fp32"] > 0 and d.memory_bandwidth > 0
    for m in models.values():
        assert m.source.startswith("https://huggingface.co/")


@pytest.mark.parametrize("name, billions", [("llama-3.1-8b", 8.03), ("llama-3.1-70b", 70.55), ("llama-2-7b", 6.74),
                                            ("qwen3-0.6b", 0.596), ("smollm2-135m", 0.1345), ("gemma-3-270m", 0.268),
                                            ("llama-68m", 0.068), ("tinyllama-1.1b", 1.10)])
def test_parameter_counts_match_the_published_sizes(name, billions):
    assert get_model(name).total_params / 1e9 == pytest.approx(billions, rel=0.01)


def test_awq_checkpoint_is_int4_only_and_about_a_quarter_of_bf16():
    awq, full = get_model("llama-3.1-70b-awq"), get_model("llama-3.1-70b")
    assert awq.default_dtype == "int4"
    assert 0.25 < awq.weight_bytes() / full.weight_bytes("bf16") < 0.3
    with pytest.raises(ProfileError, match="int4"):
        roofline("h100-sxm", "llama-3.1-70b-awq", "bf16")


def test_unknown_names_list_the_known_ones_sorted():
    with pytest.raises(ProfileError) as e:
        get_device("tpu-v9")
    text = str(e.value)
    assert "devices.yaml" in text and "'tpu-v9'" in text and len(text.splitlines()) == 1
    assert ", ".join(sorted(load_devices())) in text
    with pytest.raises(ProfileError) as e:
        get_model("gpt-5")
    assert ", ".join(sorted(load_models())) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_a_malformed_devices_file_names_file_line_and_field(tmp_path):
    bad = tmp_path / "devices.yaml"
    bad.write_text("classes:\n  gpu: {compute_efficiency: 0.5, bandwidth_efficiency: 0.8, pass_overhead_s: 0,"
                   " layer_overhead_s: 0}\ndevices:\n  x:\n    class: gpu\n    source: https://example.com\n"
                   "    peak_flops: {fp32: 1.0e+12}\n    memory_bandwidth: -5\n    memory_bytes: 1.0e+9\n")
    with pytest.raises(ProfileError) as e:
        load_devices(bad)
    assert str(e.value) == f"{bad}:8: devices.x.memory_bandwidth: expected a number greater than 0, got -5"


# ------------------------------------------------------------------------------------------------ shapes

def test_decode_of_a_70b_model_on_an_h100_is_memory_bound():
    cost = roofline("h100-sxm", "llama-3.1-70b-awq")
    assert cost.breakdown([(256, 1)]).memory_bound
    assert 10 < decode_tok_s(cost) < 100          # tens of tokens/s


def test_prefill_of_512_tokens_is_compute_bound():
    assert not roofline("h100-sxm", "llama-3.1-70b-awq").breakdown([(0, 512)]).memory_bound
    assert not roofline("rtx-4090", "llama-3.1-8b").breakdown([(0, 512)]).memory_bound


@pytest.mark.parametrize("device, model", [("h100-sxm", "llama-3.1-70b-awq"), ("rtx-4090", "llama-3.1-8b"),
                                           ("jetson-agx-orin", "llama-3.2-1b")])
def test_verifying_gamma_plus_one_costs_little_more_than_decoding(device, model):
    cost = roofline(device, model)
    decode, verify = cost.pass_s([(512, 1)]), cost.pass_s([(512, 5)])
    assert decode < verify < 1.1 * decode


def test_kv_growth_makes_long_contexts_slower():
    cost = roofline("h100-sxm", "llama-3.1-70b-awq")
    times = [cost.pass_s([(c, 1)] * 16) for c in (0, 2048, 32768)]
    assert times[0] < times[1] < times[2]
    assert times[2] > 1.5 * times[0]              # 16 x 32k tokens of KV outweigh the 37 GB of weights


def test_batching_amortises_the_weights():
    cost = roofline("h100-sxm", "llama-3.1-70b-awq")
    one, batch = cost.pass_s([(256, 1)]), cost.pass_s([(256, 1)] * 32)
    assert batch < 2 * one                        # 32 sequences for less than twice the time of one
    assert 32 / batch > 15 / one


def test_a_mixed_batch_costs_between_its_parts_and_draft_sums_passes():
    cost = roofline("a100-80gb", "llama-2-7b")
    mixed = cost.pass_s([(100, 1), (2000, 5), (0, 3)])
    assert cost.pass_s([(100, 1)]) <= mixed <= cost.pass_s([(2000, 5)] * 3)
    assert cost.draft_s(100, 3) == pytest.approx(sum(cost.pass_s([(100 + j, 1)]) for j in range(3)))
    assert cost.pass_s([]) == 0.0 and cost.draft_s(10, 0) == 0.0
    with pytest.raises(ValueError):
        cost.pass_s([(-1, 1)])


@pytest.mark.parametrize("device, model, dtype, low, high", [
    ("h100-sxm", "llama-3.1-70b-awq", None, 10, 100),
    ("jetson-agx-orin", "llama-3.2-1b", "fp16", 10, 100),
    ("cpu-x86", "smollm2-135m", "fp32", 18, 60),
])
def test_decode_rates_are_in_the_expected_range(device, model, dtype, low, high):
    assert low < decode_tok_s(roofline(device, model, dtype)) < high


def test_describe_and_protocol():
    cost = roofline("h100-sxm", "llama-3.1-70b-awq")
    assert cost.describe() == "roofline llama-3.1-70b-awq on h100-sxm (int4)"
    assert isinstance(cost, CostModel) and isinstance(LinearCost(), CostModel)


def test_linear_cost_is_todays_synthetic_profile():
    cost = LinearCost(base_s=0.01, per_token_s=0.001, per_seq_s=0.002)
    assert cost.pass_s([(0, 5), (9, 3)]) == pytest.approx(0.01 + 0.008 + 0.004)
    assert LinearCost(per_token_s=0.02).draft_s(100, 4) == pytest.approx(0.08)
    assert cost.pass_s([]) == 0.0
    with pytest.raises(ValueError):
        LinearCost(base_s=-1)


# ------------------------------------------------------------------------------------------------ tables

def write_table(tmp_path, rows, header="batch,tokens,context,seconds", meta="# model: m\n# device: d\n"):
    path = tmp_path / "profile.csv"
    path.write_text(meta + header + "\n" + "".join(r + "\n" for r in rows))
    return path


GRID = [f"{b},{t},{c},{0.010 + 0.001 * b + 0.002 * t + 0.00001 * c:.6f}"
        for b in (1, 4) for t in (1, 8) for c in (0, 1000)]


def test_table_interpolates_and_extrapolates_linearly(tmp_path):
    table = TableCost.load(write_table(tmp_path, GRID))
    exact = lambda b, t, c: 0.010 + 0.001 * b + 0.002 * t + 0.00001 * c   # noqa: E731
    assert table.lookup(2, 4, 500) == pytest.approx(exact(2, 4, 500))          # inside
    assert table.lookup(8, 16, 3000) == pytest.approx(exact(8, 16, 3000))      # past every edge
    assert table.lookup(1, 1, 0) == pytest.approx(exact(1, 1, 0))
    assert table.metadata == {"model": "m", "device": "d"}
    assert table.describe() == f"table {tmp_path / 'profile.csv'} (model m, device d)"


def test_table_never_goes_below_the_smallest_time_and_pads_mixed_batches(tmp_path):
    table = TableCost.load(write_table(tmp_path, ["1,1,100,0.02", "1,1,200,0.03"]))
    assert table.lookup(1, 1, 0) == pytest.approx(0.02)                        # would extrapolate to 0.01
    assert table.pass_s([(100, 1), (200, 1)]) == pytest.approx(0.03)           # batch 2 -> constant in batch
    assert table.draft_s(100, 2) == pytest.approx(0.02 + 0.0201)


def test_table_accepts_an_incomplete_grid_and_any_column_order(tmp_path):
    rows = ["0.02,1,1,0", "0.04,1,8,0", "0.03,2,1,0"]                          # no (2, 8) point
    table = TableCost.load(write_table(tmp_path, rows, header="seconds,batch,tokens,context"))
    assert table.lookup(1, 4, 0) == pytest.approx(0.02 + 3 * 0.02 / 7)
    assert table.lookup(2, 8, 0) == pytest.approx(0.03)                        # one point at batch 2: constant


@pytest.mark.parametrize("rows, header, expected", [
    (["1,1,0,0.1"], "batch,tokens,seconds", ":3: header: expected the columns batch,tokens,context,seconds"),
    (["1,1,0,abc"], None, ":4: seconds: expected a number, got 'abc'"),
    (["1,1,0,0"], None, ":4: seconds: expected a number > 0, got '0'"),
    (["0,1,0,0.1"], None, ":4: batch: expected a number > 0, got '0'"),
    (["1,1,-3,0.1"], None, ":4: context: expected a number >= 0, got '-3'"),
    (["1,1.5,0,0.1"], None, ":4: tokens: expected a whole number, got '1.5'"),
    (["1,1,0"], None, ":4: expected 4 comma-separated fields, got 3"),
    (["1,1,0,0.1", "1,1,0,0.2"], None, ":5: batch,tokens,context: expected each point once, got (1, 1, 0) "
                                       "again (first on line 4)"),
    ([], None, ": expected at least one measured row, got none"),
])
def test_table_validation_errors_name_file_and_line(tmp_path, rows, header, expected):
    path = write_table(tmp_path, rows, **({"header": header} if header else {}))
    with pytest.raises(ProfileError) as e:
        TableCost.load(path)
    assert str(e.value).startswith(str(path)) and expected in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_table_reports_every_bad_row(tmp_path):
    with pytest.raises(ProfileError) as e:
        TableCost.load(write_table(tmp_path, ["1,1,0,x", "1,1,1,-2", "1,1,2,0.1"]))
    assert len(e.value.problems) == 2


def test_table_without_header_or_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("# model: m\n")
    with pytest.raises(ProfileError, match="header: expected a header line"):
        TableCost.load(path)
    with pytest.raises(ProfileError, match="cannot read file"):
        TableCost.load(tmp_path / "missing.csv")


# ------------------------------------------------------------------------------------------------ spec

def test_cost_model_from_spec(tmp_path):
    cost = cost_model_from_spec({"device": "h100-sxm", "model": "llama-3.1-70b-awq"}, tmp_path)
    assert cost.describe() == "roofline llama-3.1-70b-awq on h100-sxm (int4)"
    fp32 = cost_model_from_spec({"device": "cpu-x86", "model": "smollm2-135m", "dtype": "fp32"}, tmp_path)
    assert "(fp32)" in fp32.describe()
    write_table(tmp_path, GRID)
    assert isinstance(cost_model_from_spec({"table": "profile.csv"}, tmp_path), TableCost)
    with pytest.raises(ProfileError, match="model: required field is missing"):
        cost_model_from_spec({"device": "h100-sxm"}, tmp_path)
    with pytest.raises(ProfileError, match="gpus: unknown field"):
        cost_model_from_spec({"device": "h100-sxm", "model": "llama-2-7b", "gpus": 2}, tmp_path)
    with pytest.raises(ProfileError, match="device: expected one of"):
        cost_model_from_spec({"device": "nope", "model": "llama-2-7b"}, Path("."))


# ------------------------------------------------------------------------------------------------ published

def test_published_points_are_predicted_within_20_percent():
    points = published_table()
    assert len(points) >= 12
    assert all(p.source.startswith("https://") for p in points)
    assert median_abs_error(points) <= 0.20, "\n".join(
        f"{p.model} {p.device} {p.metric}: measured {p.measured} predicted {p.predicted:.2f}" for p in points)
