"""A recorded answer cut off at its length limit can't end in the start of a key we sent."""

from __future__ import annotations

from modelroute.proxy.scrub import Scrubber

KEY = "sk-proj-0123456789abcdefghijklmnopqrstuvwxyz"


def test_a_key_cut_in_half_at_the_limit_is_redacted_from_its_first_characters() -> None:
    scrub = Scrubber([KEY])
    for kept in (4, 18, len(KEY) - 1):
        text = "Your key is " + KEY[:kept]
        assert scrub.sent_text(text, cut=True) == "Your key is [redacted]"
        assert scrub.sent_text(text) == text  # not cut: that is the model's own text


def test_whole_keys_go_and_short_or_unrelated_tails_stay() -> None:
    scrub = Scrubber([KEY])
    assert scrub.sent_text(f"a {KEY} b {KEY}") == "a [redacted] b [redacted]"
    assert scrub.sent_text("ends in sk-", cut=True) == "ends in sk-"  # 3 characters say nothing
    assert scrub.sent_text("a plain ending", cut=True) == "a plain ending"
