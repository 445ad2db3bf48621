"""Device access rules (issue #14 point 3): which rule decides, unit tests of
``easync.deviceaccess`` (no I/O).

The order is Exchange's (Exchange 2010 SP1, "Understanding Exchange ActiveSync device
access"): the device's own exemption (an administrator's allow/block of that device),
then the device access rules, then the default access level (allow).  easync adds:
a user's rules before everyone's; inside one scope, device id before user agent before
device type before "any device"; matching rules of one scope and kind: the most
restrictive.
"""

from __future__ import annotations

import pytest

from easync.deviceaccess import (
    Rule,
    account_wipe_capable,
    check_rule,
    decide,
    device_refusal,
    rule_matches,
)

ALICE = 1
BOB = 2


def rule(rid: int, kind: str, pattern: str, action: str, user: int | None = None) -> Rule:
    return Rule(rid, user, kind, pattern, action)


def state(rules: list[Rule], device: dict | None = None, device_id: str = "ApplABC123",
          device_type: str = "iPhone", ua: str = "Apple-iPhone15C2/2104.252") -> str:
    return decide(device, rules, device_id, device_type, ua).state


def test_no_rule_allows() -> None:
    assert decide(None, [], "X", "iPhone", "ua").state == "allow"
    assert decide(None, [], "X", "iPhone", "ua").reason == "default"


def test_matching_is_case_insensitive_exact_or_prefix() -> None:
    r = rule(1, "user_agent", "apple-iphone*", "block")
    assert rule_matches(r, "x", "iPhone", "Apple-iPhone15C2/2104.252")
    assert not rule_matches(r, "x", "iPhone", "Android-Mail/2023")
    exact = rule(2, "device_type", "IPHONE", "block")
    assert rule_matches(exact, "x", "iPhone", "")
    assert not rule_matches(exact, "x", "iPhoneX", "")      # no '*': the whole value
    # only a trailing '*' is special: elsewhere it is a character like any other
    inner = rule(3, "device_type", "i*e", "block")
    assert not rule_matches(inner, "x", "iPhone", "")
    assert rule_matches(rule(4, "any", "*", "block"), "", "", "")


def test_the_device_own_decision_wins_over_every_rule() -> None:
    rules = [rule(1, "device_id", "ApplABC123", "block", ALICE),
             rule(2, "any", "*", "block")]
    assert state(rules, {"access": "allow"}) == "allow"
    d = decide({"access": "allow"}, rules, "ApplABC123", "iPhone", "ua")
    assert d.reason == "device"
    assert state([rule(1, "any", "*", "allow")], {"access": "block"}) == "block"
    assert state([], {"access": "quarantine"}) == "quarantine"
    assert state([rule(1, "any", "*", "block")], {"access": None}) == "block"


def test_a_user_rule_wins_over_everyone_rules() -> None:
    rules = [rule(1, "device_id", "ApplABC123", "block"),        # everyone, most specific
             rule(2, "any", "*", "allow", ALICE)]                 # alice, least specific
    assert state(rules) == "allow"
    # another user's rules do not apply... (the store reads only the user's and
    # everyone's; decide() trusts what it is given, so give it only those)
    assert state([rules[0]]) == "block"


def test_the_most_specific_kind_decides_inside_a_scope() -> None:
    base = [rule(1, "any", "*", "quarantine"),
            rule(2, "device_type", "iPhone", "block"),
            rule(3, "user_agent", "Apple-iPhone15*", "allow")]
    assert state(base) == "allow"                         # user agent over device type
    assert state(base[:2]) == "block"                     # device type over any
    assert state(base[:1]) == "quarantine"                # any: the default access level
    assert state(base + [rule(4, "device_id", "applabc123", "quarantine")]) == "quarantine"
    d = decide(None, base, "ApplABC123", "iPhone", "Apple-iPhone15C2/2104.252")
    assert d.reason == "rule 3"


def test_rules_of_one_scope_and_kind_most_restrictive_wins() -> None:
    rules = [rule(1, "device_type", "iPhone", "allow"),
             rule(2, "device_type", "iPh*", "quarantine")]
    assert state(rules) == "quarantine"
    assert state(rules + [rule(3, "device_type", "IPHONE", "block")]) == "block"
    assert state([rules[0]]) == "allow"


def test_rules_that_do_not_match_are_ignored() -> None:
    rules = [rule(1, "device_type", "Android", "block"),
             rule(2, "device_id", "OTHER", "block", ALICE)]
    assert state(rules) == "allow"


def test_check_rule_refuses_what_cannot_be() -> None:
    check_rule("user_agent", "Apple-*", "block")
    check_rule("any", "*", "quarantine")
    for bad in (("colour", "red", "block"), ("device_type", "iPad", "explode"),
                ("device_type", "", "block"), ("any", "iPad", "block"),
                ("device_id", "x" * 201, "block"), ("device_id", "a\nb", "block")):
        with pytest.raises(ValueError):
            check_rule(*bad)


def test_account_wipe_needs_16_1() -> None:
    """MS-ASPROV 2.2.2.1: AccountOnlyRemoteWipe exists in protocol 16.1 only."""
    assert account_wipe_capable("16.1")
    assert not account_wipe_capable("16.0")
    assert not account_wipe_capable("14.1")
    assert not account_wipe_capable(None)
    assert not account_wipe_capable("garbage")


def test_device_refusal() -> None:
    """What the HTTP layer refuses: blocked → every command; quarantined → all but
    Provision (the device's information reaches the administrator who decides); a
    wipe pending is delivered whatever the access state, but an account-only wipe
    cannot be carried below 16.1 (MS-ASPROV 2.2.2.1) and is never turned into a full
    one: such a request is refused."""
    block = [rule(7, "user_agent", "Apple-*", "block")]
    quarantine = [rule(8, "device_type", "iPhone", "quarantine")]
    ua = "Apple-iPhone15C2/2104.252"
    assert device_refusal(None, block, "D", "iPhone", ua, "Provision", "14.1") == \
        "device block (rule 7)"
    assert device_refusal(None, block, "D", "iPhone", ua, "Sync", "16.1") is not None
    assert device_refusal(None, quarantine, "D", "iPhone", ua, "Provision", "14.1") is None
    assert device_refusal(None, quarantine, "D", "iPhone", ua, "FolderSync", "14.1") == \
        "device quarantine (rule 8)"
    assert device_refusal(None, [], "D", "iPhone", ua, "Sync", "14.1") is None
    wipe = {"wipe": "pending", "info": {"wipe_kind": "device"}}
    assert device_refusal(wipe, block, "D", "iPhone", ua, "Provision", "14.1") is None
    account = {"wipe": "pending", "info": {"wipe_kind": "account"}}
    assert device_refusal(account, [], "D", "iPhone", ua, "Provision", "16.1") is None
    assert "16.1" in (device_refusal(account, [], "D", "iPhone", ua, "Provision", "14.1")
                      or "")
