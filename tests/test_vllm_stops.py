"""`integrations.vllm.stops`: which tokens end a vLLM row early, and the cut that gives HF's stopped completion.
Needs no vLLM (the engine runs in tests/test_vllm_backend.py, where both backends' stopped rows are compared)."""

from adaptive_decoder.integrations.vllm.stops import needs_rerun, stop_length, stop_token_ids
from adaptive_decoder.tasks.translation import first_line, first_line_complete
from conftest import tiny_tokenizer


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_stop_tokens_are_the_tokens_holding_a_stop_char():
    tok = tiny_tokenizer()
    got = stop_token_ids(tok, first_line_complete.stop_chars)
    # the byte-level tokenizer: one token per byte, so the one-byte breaks \n \r \v \f \x1c \x1d \x1e (7 ids);
    # \x85, \u2028 and \u2029 are two or three bytes, no single token holds them
    assert sorted(got) == sorted(ids(tok, c)[0] for c in "\n\r\x0b\x0c\x1c\x1d\x1e")
    assert stop_token_ids(tok, first_line_complete.stop_chars) is got  # cached per tokenizer


def test_stop_chars_are_every_break_splitlines_splits_at():
    """If splitlines broke at a character missing from stop_chars, vLLM would run past HF's stop (then cut back:
    still exact, only slower); the list is checked against every code point."""
    breaks = {chr(c) for c in range(0x110000) if len(("a" + chr(c) + "b").splitlines()) == 2}
    assert breaks == set(first_line_complete.stop_chars)


def test_stop_length_is_hf_rule_and_a_leading_break_asks_for_a_rerun():
    tok = tiny_tokenizer()
    eos = tok.eos_token_id
    stops = set(stop_token_ids(tok, first_line_complete.stop_chars))
    c = ids(tok, "  Hello world\nmore")
    n = stop_length(tok, c, first_line_complete)
    assert n == len(ids(tok, "  Hello world\n")) and first_line(tok.decode(c[:n])) == "Hello world"
    assert not needs_rerun(c[:n], n, stops)
    # vLLM ends this row at the leading break, before HF would: rerun
    lead = ids(tok, "\n")
    assert stop_length(tok, lead, first_line_complete) is None and needs_rerun(lead, None, stops)
    # a row that ran to max_new_tokens without a break, or ended at an EOS, is kept whole
    plain = ids(tok, "no break here")
    assert stop_length(tok, plain, first_line_complete) is None and not needs_rerun(plain, None, stops)
    # the EOS step is not checked (HF does not check a row again once it produced one)
    assert stop_length(tok, plain + [eos], lambda t: t.endswith("here"), [eos]) == len(plain)
    assert stop_length(tok, plain + [eos], lambda t: False, [eos]) is None
