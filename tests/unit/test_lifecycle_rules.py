"""Lifecycle rule files: the defaults load, and every fault is refused with file, rule, reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.lifecycle.bootstrap import bootstrap
from services.lifecycle.domain import DEFAULT_RULES
from services.lifecycle.rules import (
    STAGES,
    InvalidRules,
    RulesInForce,
    Threshold,
    load_rules,
    parse_rules,
)
from services.lifecycle.settings import LifecycleSettings

MINIMAL = """
parameters: {dormant_days: 90}
rules:
  - {name: first_seen, from: [none], to: prospect, when: "True"}
"""


def with_rule(rule: str, extra: str = "") -> str:
    return MINIMAL + extra + "\n  - " + rule


def test_the_default_rules_load_and_cover_every_stage() -> None:
    rules = load_rules(DEFAULT_RULES)
    targets = {r.to.value for r in rules.rules}
    assert targets == set(STAGES)
    for stage in ("none", *STAGES):
        assert rules.leaving(stage), f"no rule leaves {stage}"
    # Time-driven defaults come due at their documented anchors.
    dormant = next(r for r in rules.rules if r.name == "dormant_after_inactivity")
    assert Threshold("inactive_days", 90.0, False) in dormant.thresholds
    churned = next(r for r in rules.rules if r.name == "churned_after_dormancy")
    assert churned.thresholds == (Threshold("days_in_stage", 180.0, False),)
    described = rules.describe()
    assert described["file"] == "lifecycle.yaml" and len(described["version"]) == 12
    assert "last_activity_at + 90 days" in next(
        r for r in described["rules"] if r["name"] == "dormant_after_inactivity"
    )["comes_due"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [", "x.yaml: not valid YAML"),
        ("- 1", "x.yaml: expected a mapping"),
        (MINIMAL + "stages: []", "x.yaml: unknown section(s) stages"),
        ("parameters: {a: 1}", "x.yaml: expected a non-empty 'rules:' list"),
        (
            "rules: [{name: x, from: [prospect], to: active, when: 'True'}]",
            "x.yaml: no rule starts a lifecycle",
        ),
        (with_rule("{name: a, from: [prospect], to: active, when: inactive_dayz > 1}"),
         "x.yaml, rule 'a': line 1, col 1: unknown name 'inactive_dayz' (did you mean "
         "'inactive_days'?)"),
        (with_rule("{name: a, from: [prospect], to: active, when: \"open('f')\"}"),
         "x.yaml, rule 'a': line 1, col 1: function calls other than"),
        (with_rule("{name: a, from: [prospect], to: active, when: 'frequency_30 ** 2 > 4'}"),
         "x.yaml, rule 'a': line 1, col 14: the power operator ** is not allowed"),
        (with_rule("{name: a, from: [prospect], to: nowhere, when: 'True'}"),
         "x.yaml, rule 'a': to: unknown stage 'nowhere'"),
        (with_rule("{name: a, from: [somewhere], to: active, when: 'True'}"),
         "x.yaml, rule 'a': from: unknown stage 'somewhere'"),
        (with_rule("{name: a, from: [active], to: active, when: 'True'}"),
         "x.yaml, rule 'a': a rule cannot move a customer from 'active' to itself"),
        (with_rule("{name: first_seen, from: [prospect], to: active, when: 'True'}"),
         "x.yaml, rule 'first_seen': name 'first_seen' is already used by rule 1"),
        (with_rule("{name: Bad-Name, from: [prospect], to: active, when: 'True'}"),
         "x.yaml, rule 'Bad-Name': name 'Bad-Name' must be lower_snake_case"),
        (with_rule("{name: correction, from: [prospect], to: active, when: 'True'}"),
         "x.yaml, rule 'correction': the name 'correction' is reserved"),
        (with_rule("{name: a, from: [prospect], to: active}"),
         "x.yaml, rule 'a': 'when' is missing"),
        (with_rule("{name: a, from: [prospect], to: active, when: 'True', then: x}"),
         "x.yaml, rule 'a': unknown key(s) then"),
        (with_rule("{name: a, from: [prospect], to: active, when: 'inactive_days * 2 > 90'}"),
         "x.yaml, rule 'a': the clock 'inactive_days' must be compared directly with a number, "
         "a parameter, or an expression of parameters and figures without clocks"),
        (with_rule("{name: a, from: [prospect], to: active, "
                   "when: 'inactive_days > days_in_stage'}"),
         "the clock 'inactive_days' must be compared directly"),
        (MINIMAL.replace("dormant_days: 90", "dormant_days: '90'"),
         "x.yaml, parameter 'dormant_days': must be a number, not str"),
        (MINIMAL.replace("dormant_days: 90", "stage: 90"),
         "x.yaml, parameter 'stage': name 'stage' is already a variable or function"),
        ("definitions: {quiet: later_one, later_one: 'True'}\n" + MINIMAL,
         "x.yaml, definition 'quiet': line 1, col 1: unknown name 'later_one'"),
    ],
)
def test_an_invalid_rule_file_is_refused_with_file_rule_and_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidRules) as caught:
        parse_rules(text, "x.yaml")
    assert message in str(caught.value)


def test_clock_thresholds_are_found_however_the_comparison_is_written() -> None:
    rules = parse_rules(
        with_rule(
            "{name: a, from: [prospect], to: active, when: "
            "'90 <= inactive_days or 10 < days_in_stage <= dormant_days + 5 "
            "or days_since_salary == None'}"
        ),
        "x.yaml",
    )
    assert set(rules.thresholds("prospect")) == {
        Threshold("inactive_days", 90.0, False),
        Threshold("days_in_stage", 10.0, True),
        Threshold("days_in_stage", 95.0, True),
    }


def test_a_clock_compared_with_figures_comes_due_per_customer() -> None:
    rules = parse_rules(
        with_rule("{name: a, from: [prospect], to: active, "
                  "when: 'inactive_days >= gaps * usual_gap_days'}").replace(
            "dormant_days: 90", "dormant_days: 90, gaps: 3"),
        "x.yaml",
    )
    [threshold] = [t for t in rules.thresholds("prospect") if t.scaled is not None]
    assert threshold.clock == "inactive_days" and threshold.source == "gaps * usual_gap_days"
    assert threshold.days_for({"gaps": 3, "usual_gap_days": 7.5}) == 22.5
    assert threshold.days_for({"gaps": 3, "usual_gap_days": None}) is None  # never due
    described = next(r for r in rules.describe()["rules"] if r["name"] == "a")
    assert described["comes_due"] == ["last_activity_at + (gaps * usual_gap_days) days"]


def test_a_definition_lends_its_thresholds_to_the_rules_that_use_it() -> None:
    rules = parse_rules(
        "definitions: {quiet: inactive_days >= 30, very_quiet: quiet and inactive_days >= 60}\n"
        + with_rule("{name: a, from: [prospect], to: active, when: very_quiet}"),
        "x.yaml",
    )
    rule = rules.rules[-1]
    assert rule.uses == ("quiet", "very_quiet")
    assert {t.days for t in rule.thresholds} == {30.0, 60.0}


def test_reload_keeps_the_rules_in_force_when_the_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "lifecycle.yaml"
    path.write_text(MINIMAL)
    held = RulesInForce.load(path)
    before = held.rules
    path.write_text(with_rule("{name: a, from: [prospect], to: active, when: 'nope >'}"))
    with pytest.raises(InvalidRules, match="lifecycle.yaml, rule 'a': line 1, col 1: syntax error"):
        held.reload()
    assert held.rules is before
    path.write_text(with_rule("{name: a, from: [prospect], to: active, when: 'True'}"))
    assert [r.name for r in held.reload().rules] == ["first_seen", "a"]


def test_the_service_does_not_start_with_invalid_rules(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(with_rule("{name: a, from: [prospect], to: nowhere, when: 'True'}"))
    with pytest.raises(InvalidRules, match="broken.yaml, rule 'a': to: unknown stage"):
        bootstrap(LifecycleSettings(rules_file=path))
    with pytest.raises(InvalidRules, match="cannot read the rule file"):
        bootstrap(LifecycleSettings(rules_file=tmp_path / "missing.yaml"))
