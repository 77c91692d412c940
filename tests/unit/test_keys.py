"""The one spelling of target, candidate and endpoint keys (proxy/keys.py), and its inverses."""

from __future__ import annotations

from modelroute.proxy import keys


def test_keys_are_spelt_one_way_and_split_back() -> None:
    assert keys.target_key("gw", "deepseek-v4-flash") == "gw/deepseek-v4-flash"
    cand = keys.candidate_key("gw", "deepseek-v4-flash", "us-east")
    assert (
        cand == "gw/deepseek-v4-flash@us-east" == keys.at_region("gw/deepseek-v4-flash", "us-east")
    )
    assert keys.endpoint_key("gw", "us-east") == "gw@us-east"
    assert keys.split_candidate(cand) == ("gw", "deepseek-v4-flash", "us-east")
    assert keys.split_target("gw/deepseek-v4-flash") == ("gw", "deepseek-v4-flash")
    assert keys.split_endpoint("gw@us-east") == ("gw", "us-east")


def test_a_model_name_with_slashes_or_at_signs_survives_the_round_trip() -> None:
    # upstream model ids such as "meta-llama/Llama-3@8k" are legal; provider and region
    # names are DNS labels (no "/" or "@"), so splitting at the first "/" and last "@" is exact
    cand = keys.candidate_key("gw", "meta-llama/Llama-3@8k", "eu-west")
    assert keys.split_candidate(cand) == ("gw", "meta-llama/Llama-3@8k", "eu-west")
    assert keys.split_target(keys.target_key("gw", "a/b")) == ("gw", "a/b")
