"""The rule-based tag system (标签体系): YAML rules in the safe expression language."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import logging

import yaml

from shared.expr import Expression, ExpressionError, compile_expression

log = logging.getLogger("tenure.profile.tags")

# Every name a tag rule may use; a rule naming anything else is rejected when loaded.
TAG_VARIABLES = frozenset(
    {
        "recency_days", "frequency_30", "frequency_90", "frequency_365", "monetary_30",
        "monetary_90", "monetary_365", "sessions_30", "sessions_prev_30", "engagement_trend",
        "active_days_30", "salary_credits_90", "days_since_salary", "last_nps", "nps_category",
        "open_complaints", "oldest_open_complaint_days", "resolved_complaints", "r", "f", "m",
        "rfm_segment", "clv", "value_tier", "tier", "capability", "willingness", "quadrant",
        "segment", "stage", "churn_probability", "product_count", "products", "total_balance",
        "tenure_days", "channel_mix", "digital_share", "days_until_birthday", "flags",
    }
)


class InvalidRules(ValueError):
    """A rule file that cannot be used; the message names the file, the tag and the fault."""


@dataclass(frozen=True)
class TagRule:
    tag: str
    when: Expression
    description: str = ""


@dataclass(frozen=True)
class TagRules:
    rules: tuple[TagRule, ...]
    sources: tuple[str, ...]

    def evaluate(self, variables: dict[str, Any]) -> list[str]:
        found = []
        for rule in self.rules:
            try:
                if rule.when.matches(variables):
                    found.append(rule.tag)
            except ExpressionError as exc:
                # A value of the wrong type for this rule: the tag does not apply, and ops
                # see the rule that needs fixing (never the customer's values).
                log.warning("tag rule failed", extra={"reason": f"{rule.tag}: {exc.reason}"[:200]})
        return sorted(found)

    def describe(self) -> list[dict[str, str]]:
        return [{"tag": r.tag, "when": r.when.source, "description": r.description}
                for r in self.rules]


def load_rules(directory: Path) -> TagRules:
    """Load and validate every `*.yaml` in `directory`; any fault rejects the whole set."""
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise InvalidRules(f"no tag rule files (*.yaml) in {directory}")
    rules: list[TagRule] = []
    seen: dict[str, str] = {}
    for path in files:
        try:
            document = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise InvalidRules(f"{path.name}: not valid YAML: {exc}") from None
        entries = (document or {}).get("tags") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise InvalidRules(f"{path.name}: expected a top-level 'tags:' list")
        for i, entry in enumerate(entries):
            where = f"{path.name}, rule {i + 1}"
            if not isinstance(entry, dict) or not isinstance(entry.get("tag"), str) \
                    or not isinstance(entry.get("when"), str):
                raise InvalidRules(f"{where}: each rule needs 'tag' and 'when' strings")
            tag = entry["tag"]
            if not tag.replace("_", "").isalnum() or not tag.islower():
                raise InvalidRules(f"{where}: tag {tag!r} must be lower_snake_case")
            if tag in seen:
                raise InvalidRules(f"{where}: tag {tag!r} is already defined in {seen[tag]}")
            try:
                expression = compile_expression(entry["when"], allowed_names=set(TAG_VARIABLES))
            except ExpressionError as exc:
                raise InvalidRules(f"{where} ({tag}): {exc}") from None
            seen[tag] = path.name
            rules.append(TagRule(tag, expression, str(entry.get("description", ""))))
    return TagRules(tuple(rules), tuple(p.name for p in files))
