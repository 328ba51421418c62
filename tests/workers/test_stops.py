"""Finish rules as pure functions: stop ids, stop strings, min_tokens, ignore_eos, max tokens."""
from workers.decoding.stops import StopRules, finish_state, reported_stop_ids, row_stop_ids

WORDS = {1: "a", 2: "b", 3: "c", 4: "##", 5: "#", 6: " end", 9: ""}


def decode(ids):
    return "".join(WORDS[i] for i in ids)


def test_stop_id_is_excluded_and_named():
    done = finish_state([1, 2, 9, 3], StopRules(frozenset({9}), max_new=10, reported_ids=frozenset({9})))
    assert (done.reason, done.token_ids, done.stop_reason, done.text) == ("stop", [1, 2], "9", None)


def test_end_of_sequence_has_no_stop_reason_as_in_vllm():
    done = finish_state([1, 2, 9, 3], StopRules(frozenset({9}), max_new=10))  # 9: the model's EOS
    assert (done.reason, done.token_ids, done.stop_reason) == ("stop", [1, 2], None)
    assert reported_stop_ids((9,), (5, 9)) == {5}  # vLLM checks EOS first: None even when listed
    assert reported_stop_ids((9,), (5, 9), ignore_eos=True) == {5, 9}


def test_length_and_going_on():
    assert finish_state([1, 2], StopRules(max_new=3)) is None
    done = finish_state([1, 2, 3, 1], StopRules(max_new=3))
    assert (done.reason, done.token_ids, done.stop_reason) == ("length", [1, 2, 3], None)


def test_stop_string_across_tokens_trims_text():
    rules = StopRules(stop_strings=("#a",), max_new=10)
    done = finish_state([1, 2, 5, 1, 3], rules, decode)  # "ab" + "#" + "a": completes at token 3
    assert (done.token_ids, done.text, done.stop_reason) == ([1, 2, 5, 1], "ab", "#a")
    done = finish_state([1, 4, 1], rules, decode)  # "a##a": the match starts inside a token
    assert done.text == "a#" and done.token_ids == [1, 4, 1]


def test_earliest_stop_wins():
    rules = StopRules(frozenset({3}), ("b",), max_new=10, reported_ids=frozenset({3}))
    assert finish_state([1, 2, 3], rules, decode).stop_reason == "b"
    assert finish_state([1, 3, 2], rules, decode).stop_reason == "3"


def test_min_tokens_defers_every_stop():
    rules = StopRules(frozenset({9}), ("b",), min_tokens=3, max_new=10, reported_ids=frozenset({9}))
    assert finish_state([1, 9, 2], rules, decode) is None
    done = finish_state([1, 9, 2, 9], rules, decode)
    assert done.token_ids == [1, 9, 2] and done.stop_reason == "9"


def test_checked_prefix_is_not_searched_again_but_matches_across_it():
    rules = StopRules(stop_strings=("ab",), max_new=10)
    assert finish_state([3, 1], rules, decode, checked=0) is None
    done = finish_state([3, 1, 2], rules, decode, checked=2)  # "a" was checked, "b" completes the match
    assert done.token_ids == [3, 1, 2] and done.text == "c"


def test_ignore_eos_keeps_own_stop_ids():
    assert row_stop_ids((7, 8), (5,), ignore_eos=False) == {5, 7, 8}
    assert row_stop_ids((7, 8), (5,), ignore_eos=True) == {5}
