"""Request controls of a served head (`integrations.vllm.controls`), parsed without vLLM: what a client may send
in `vllm_xargs`, and the one-line refusals (the engine side is in tests/test_vllm_plugin.py)."""

import pytest

from adaptive_decoder.integrations.vllm.controls import CONTROL_KEYS, admission_bins, request_controls

BINS = {"temperature": 4, "top_p": 2}


def test_controls_are_parsed():
    assert request_controls(None) is None and request_controls({"session_id": "x"}) is None
    # the package's own keys (the sampling backend's spec, a sequence decision) are not controls
    assert request_controls({"adaptive_decoder_request": {"seed": 1}, "adaptive_decoder_seq_choice": {}}) is None
    got = request_controls({"adaptive": "off", "adaptive_max_temperature": 0.7, "adaptive_temperature_bin": 3,
                            "adaptive_top_p_bin": 1.0}, BINS)
    assert got == {"off": True, "max_temperature": 0.7, "bins": {"temperature": 3, "top_p": 1}}


@pytest.mark.parametrize("args, msg", [
    ({"adaptive": "no"}, "adaptive must be 'on' or 'off', got 'no'"),
    ({"adaptive_temp": 1}, "unknown key(s) ['adaptive_temp']"),
    ({"adaptive_max_temperature": -1}, "adaptive_max_temperature must be >= 0, got -1"),
    ({"adaptive_max_temperature": "hot"}, "adaptive_max_temperature must be a finite number, got 'hot'"),
    ({"adaptive_top_p_bin": 0.5}, "adaptive_top_p_bin must be an integer, got 0.5"),
    ({"adaptive_temperature_bin": 4}, "adaptive_temperature_bin is 4, but the served head has 4 temperature bins (0..3)"),
    ({"adaptive_top_k_bin": 0},
     "adaptive_top_k_bin: the served head does not choose top_k (it chooses ['temperature', 'top_p'])"),
])
def test_bad_controls_are_refused_in_one_line(args, msg):
    with pytest.raises(ValueError) as err:
        request_controls(args, BINS)
    text = str(err.value)
    assert msg in text and "\n" not in text and str(list(CONTROL_KEYS)) in text


def test_bins_are_checked_only_where_known():
    assert request_controls({"adaptive_temperature_bin": 12}) == {"off": False, "max_temperature": None,
                                                                  "bins": {"temperature": 12}}


def test_admission_checks_bins_only_where_every_head_of_the_process_agrees(monkeypatch):
    monkeypatch.setattr("adaptive_decoder.integrations.vllm.controls.SERVED_BINS", {})
    from adaptive_decoder.integrations.vllm import controls

    assert admission_bins() is None
    controls.SERVED_BINS["/a"] = {"temperature": 4}
    controls.SERVED_BINS["/b"] = {"temperature": 4}
    assert admission_bins() == {"temperature": 4}
    controls.SERVED_BINS["/c"] = {"temperature": 6}
    assert admission_bins() is None
