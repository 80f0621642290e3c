"""Lifecycle rules as configuration: parameters, definitions and transition rules from YAML,
compiled in the safe expression language and checked when loaded (and on every reload).

A rule moves a customer from one of its `from` stages to its `to` stage when its `when`
expression holds. Rules are tried in file order; the first that holds fires. Expressions see
the customer's figures (VARIABLES), the parameters and the definitions written before them.

Clock variables (CLOCKS) count days since an anchor, such as the last customer-initiated
activity; they grow with event time while nothing else changes. A rule may compare a clock
only directly with a number or parameter (`inactive_days >= dormant_days`), so the service
knows the event time at which the rule can come true (last activity + 90 days) and can both
stamp the transition with it and find the customer again when the watermark passes it.

>>> rules = parse_rules('''
... parameters: {dormant_days: 90}
... rules:
...   - {name: first_seen, from: [none], to: prospect, when: "True"}
...   - {name: dormant, from: [prospect], to: dormant, when: inactive_days >= dormant_days}
... ''', "example.yaml")
>>> [(t.clock, t.days, t.after) for t in rules.thresholds("prospect")]
[('inactive_days', 90.0, False)]
>>> parse_rules("rules: [{name: x, from: [none], to: nowhere, when: 'True'}]", "bad.yaml")
Traceback (most recent call last):
  ...
services.lifecycle.rules.InvalidRules: bad.yaml, rule 'x': to: unknown stage 'nowhere' \
(stages: prospect, onboarding, active, loyal, at_risk, dormant, churned, won_back)
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.events import Stage
from shared.expr import FUNCTIONS, Expression, ExpressionError, compile_expression

START = "none"
"""The pseudo-stage of a customer lifecycle has not seen yet (`from: [none]`)."""
STAGES = tuple(s.value for s in Stage)
CORRECTION_RULE = "correction"

# Clock variable -> the anchor it counts days from (see domain.Position.anchor).
CLOCKS: Mapping[str, str] = {
    "days_in_stage": "stage_entered_at",
    "days_since_first_product": "first_product_at",
    "days_since_registered": "registered_at",
    "inactive_days": "last_activity_at",
    "days_since_salary": "last_salary_at",
    "oldest_open_complaint_days": "oldest_open_complaint_at",
}
# Figures that change only when a fact arrives (as of the latest fact).
FIGURES = frozenset(
    {
        "stage", "registered", "segment", "value_tier", "tags", "products", "product_count",
        "product_types", "products_ever", "all_accounts_closed", "activity_since_stage",
        "transaction_count", "frequency_30", "frequency_90", "frequency_365", "monetary_30",
        "monetary_90", "monetary_365", "sessions_30", "sessions_prev_30", "engagement_trend",
        "active_days_30", "salary_credits_90", "total_balance", "balance_avg_30",
        "balance_prior_avg_60", "balance_trend", "open_complaints", "last_nps",
        "churn_probability", "churn_band", "churn_probability_usual", "churn_odds_ratio",
        "usual_gap_days",
    }
)
VARIABLES = FIGURES | frozenset(CLOCKS)

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_TOP_KEYS = {"parameters", "definitions", "rules"}
_RULE_KEYS = {"name", "from", "to", "when", "description"}
_ORDERINGS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)
_MIRROR = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE}


class InvalidRules(ValueError):
    """A rule file that cannot be used: the message names the file, the rule and the reason."""


@dataclass(frozen=True)
class Threshold:
    """A clock crossing a rule reads: truth can change at anchor + `days` (just after it
    when `after`, for `>` and `<=`). A threshold that reads the customer's figures
    (`inactive_days >= 3 * usual_gap_days`) has its days in `scaled`: figures change only
    when a fact arrives, so between facts it is as fixed as a number."""

    clock: str
    days: float
    after: bool
    scaled: Expression | None = field(default=None, compare=False, hash=False)
    source: str | None = None  # the expression's text: what makes two thresholds the same

    def days_for(self, values: Mapping[str, Any]) -> float | None:
        """The threshold's days for a customer (None: not known, never comes due)."""
        if self.scaled is None:
            return self.days
        try:
            value = self.scaled.evaluate(values)
        except ExpressionError:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)


@dataclass(frozen=True)
class Definition:
    name: str
    when: Expression
    description: str = ""
    thresholds: tuple[Threshold, ...] = ()


@dataclass(frozen=True)
class Rule:
    name: str
    from_stages: tuple[str, ...]
    to: Stage
    when: Expression
    description: str = ""
    uses: tuple[str, ...] = ()  # definitions it reads, directly or through others
    thresholds: tuple[Threshold, ...] = ()  # its own and those of the definitions it uses


@dataclass(frozen=True)
class RuleSet:
    """A validated rule file; immutable, swapped whole on reload."""

    source: str
    version: str
    parameters: Mapping[str, float]
    definitions: tuple[Definition, ...]
    rules: tuple[Rule, ...]
    _by_stage: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict, repr=False)
    _thresholds: Mapping[str, tuple[Threshold, ...]] = field(default_factory=dict, repr=False)

    def leaving(self, stage: str | None) -> tuple[Rule, ...]:
        """The rules that can move a customer out of `stage` (None: not seen yet), in order."""
        return self._by_stage.get(stage or START, ())

    def thresholds(self, stage: str | None) -> tuple[Threshold, ...]:
        """The clock crossings that can make a rule out of `stage` come true."""
        return self._thresholds.get(stage or START, ())

    def describe(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "version": self.version,
            "parameters": dict(self.parameters),
            "definitions": [
                {"name": d.name, "when": d.when.source, "description": d.description}
                for d in self.definitions
            ],
            "rules": [
                {
                    "name": r.name,
                    "from": list(r.from_stages),
                    "to": r.to.value,
                    "when": r.when.source,
                    "description": r.description,
                    "comes_due": [
                        f"{CLOCKS[t.clock]} + "
                        f"{f'({t.source})' if t.source else f'{t.days:g}'} days"
                        f"{' (just after)' if t.after else ''}"
                        for t in r.thresholds
                    ],
                }
                for r in self.rules
            ],
        }


def load_rules(path: Path) -> RuleSet:
    """Read and validate a rule file; InvalidRules names what is wrong and where."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidRules(f"{path}: cannot read the rule file: {exc.strerror or exc}") from None
    return parse_rules(text, path.name)


def parse_rules(text: str, source: str) -> RuleSet:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidRules(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidRules(
            f"{source}: expected a mapping with 'parameters', 'definitions', 'rules'"
        )
    unknown = set(document) - _TOP_KEYS
    if unknown:
        raise InvalidRules(
            f"{source}: unknown section(s) {', '.join(sorted(map(str, unknown)))}; "
            f"expected {', '.join(sorted(_TOP_KEYS))}"
        )
    parameters = _parameters(document.get("parameters") or {}, source)
    definitions = _definitions(document.get("definitions") or {}, parameters, source)
    rules = _rules(document.get("rules"), parameters, definitions, source)
    by_stage: dict[str, list[Rule]] = {}
    for rule in rules:
        for stage in rule.from_stages:
            by_stage.setdefault(stage, []).append(rule)
    if START not in by_stage:
        raise InvalidRules(f"{source}: no rule starts a lifecycle: add one with 'from: [none]'")
    thresholds = {
        stage: tuple(dict.fromkeys(t for r in stage_rules for t in r.thresholds))
        for stage, stage_rules in by_stage.items()
    }
    return RuleSet(
        source=source,
        version=hashlib.sha256(text.encode()).hexdigest()[:12],
        parameters=parameters,
        definitions=tuple(definitions.values()),
        rules=tuple(rules),
        _by_stage={s: tuple(r) for s, r in by_stage.items()},
        _thresholds=thresholds,
    )


# ------------------------------------------------------------------ sections


def _check_name(name: Any, where: str, taken: Mapping[str, str], *, variable: bool = True) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRules(f"{where}: name {name!r} must be lower_snake_case")
    if variable and (name in VARIABLES or name in FUNCTIONS):
        raise InvalidRules(f"{where}: name {name!r} is already a variable or function")
    if name in taken:
        raise InvalidRules(f"{where}: name {name!r} is already used by {taken[name]}")
    return name


def _parameters(raw: Any, source: str) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise InvalidRules(f"{source}: 'parameters' must map names to numbers")
    out: dict[str, float] = {}
    for name, value in raw.items():
        where = f"{source}, parameter {name!r}"
        _check_name(name, where, {k: "a parameter" for k in out})
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRules(f"{where}: must be a number, not {type(value).__name__}")
        out[name] = value
    return out


def _definitions(raw: Any, parameters: Mapping[str, float], source: str) -> dict[str, Definition]:
    if not isinstance(raw, dict):
        raise InvalidRules(f"{source}: 'definitions' must map names to expressions")
    out: dict[str, Definition] = {}
    for name, body in raw.items():
        where = f"{source}, definition {name!r}"
        taken = {**{k: "a parameter" for k in parameters}, **{k: "a definition" for k in out}}
        _check_name(name, where, taken)
        description = ""
        if isinstance(body, dict):
            description = str(body.get("description", ""))
            body = body.get("when")
        if not isinstance(body, str):
            raise InvalidRules(f"{where}: needs an expression (text)")
        expression = _compile(body, parameters, out, where)
        out[name] = Definition(name, expression, description,
                               _thresholds(expression, parameters, where))
    return out


def _rules(
    raw: Any, parameters: Mapping[str, float], definitions: Mapping[str, Definition], source: str
) -> list[Rule]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRules(f"{source}: expected a non-empty 'rules:' list")
    out: list[Rule] = []
    names: dict[str, str] = {}
    for i, entry in enumerate(raw):
        label = entry.get("name") if isinstance(entry, dict) else None
        where = f"{source}, rule {label!r}" if isinstance(label, str) else f"{source}, rule {i + 1}"
        if not isinstance(entry, dict):
            raise InvalidRules(f"{where}: each rule is a mapping with name, from, to, when")
        unknown = set(entry) - _RULE_KEYS
        if unknown:
            raise InvalidRules(
                f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                f"expected {', '.join(sorted(_RULE_KEYS))}"
            )
        for key in ("name", "from", "to", "when"):
            if key not in entry:
                raise InvalidRules(f"{where}: '{key}' is missing")
        name = entry["name"]
        if name == CORRECTION_RULE:
            raise InvalidRules(f"{where}: the name {CORRECTION_RULE!r} is reserved")
        _check_name(name, where, names, variable=False)
        names[name] = f"rule {len(out) + 1}"
        from_stages = entry["from"]
        if isinstance(from_stages, str):
            from_stages = [from_stages]
        if not isinstance(from_stages, list) or not from_stages:
            raise InvalidRules(f"{where}: from: expected a list of stages")
        for stage in from_stages:
            if stage != START and stage not in STAGES:
                raise InvalidRules(
                    f"{where}: from: unknown stage {stage!r} "
                    f"(stages: {START}, {', '.join(STAGES)})"
                )
        to = entry["to"]
        if to not in STAGES:
            raise InvalidRules(f"{where}: to: unknown stage {to!r} (stages: {', '.join(STAGES)})")
        if to in from_stages:
            raise InvalidRules(f"{where}: a rule cannot move a customer from {to!r} to itself")
        when = entry["when"]
        if isinstance(when, bool):  # YAML reads a bare True as a boolean
            when = str(when)
        if not isinstance(when, str):
            raise InvalidRules(f"{where}: when: needs an expression (text)")
        expression = _compile(when, parameters, definitions, where)
        uses = _uses(expression, definitions)
        own = _thresholds(expression, parameters, where)
        inherited = [t for d in uses for t in definitions[d].thresholds]
        out.append(
            Rule(
                name=name,
                from_stages=tuple(dict.fromkeys(from_stages)),
                to=Stage(to),
                when=expression,
                description=str(entry.get("description", "")),
                uses=uses,
                thresholds=tuple(dict.fromkeys([*own, *inherited])),
            )
        )
    return out


def _compile(
    text: str, parameters: Mapping[str, float], definitions: Mapping[str, Definition], where: str
) -> Expression:
    try:
        return compile_expression(
            text, allowed_names=VARIABLES | set(parameters) | set(definitions)
        )
    except ExpressionError as exc:
        raise InvalidRules(f"{where}: {exc}") from None


def _uses(expression: Expression, definitions: Mapping[str, Definition]) -> tuple[str, ...]:
    """Definitions read, directly or through other definitions, in file order."""
    found: set[str] = set()
    todo = [n for n in expression.names if n in definitions]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(n for n in definitions[name].when.names if n in definitions)
    return tuple(n for n in definitions if n in found)


def _thresholds(
    expression: Expression, parameters: Mapping[str, float], where: str
) -> tuple[Threshold, ...]:
    """Where the clocks an expression reads can change its truth; rejects any other use of a
    clock, since the service could not tell when such a rule comes due."""
    tree = ast.parse(expression.source.strip(), mode="eval")
    placed: set[int] = set()
    found: list[Threshold] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
            for clock_side, other, mirrored in ((left, right, False), (right, left, True)):
                if not (isinstance(clock_side, ast.Name) and clock_side.id in CLOCKS):
                    continue
                if not isinstance(op, _ORDERINGS):
                    continue
                value = _constant(other, parameters)
                scaled: Expression | None = None
                if value is _NOT_CONSTANT:
                    scaled = _between_facts(other, parameters)
                    if scaled is None:
                        continue
                    value = 0.0
                placed.add(id(clock_side))
                if value is None:
                    continue  # `inactive_days == None`: changes with facts, not with time
                kind = _MIRROR.get(type(op), type(op)) if mirrored else type(op)
                source = scaled.source if scaled is not None else None
                found.append(Threshold(clock_side.id, float(value), kind in (ast.Gt, ast.LtE),
                                       scaled, source))
                if kind in (ast.Eq, ast.NotEq):
                    found.append(Threshold(clock_side.id, float(value), True, scaled, source))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in CLOCKS and id(node) not in placed:
            raise InvalidRules(
                f"{where}: the clock {node.id!r} must be compared directly with a number, a "
                f"parameter, or an expression of parameters and figures without clocks (such "
                f"as {node.id} >= 90), so the service knows the event time at which the rule "
                "comes due"
            )
    return tuple(dict.fromkeys(found))


_NOT_CONSTANT = object()


def _between_facts(node: ast.expr, parameters: Mapping[str, float]) -> Expression | None:
    """An operand that reads only parameters and figures (no clock, no definition, which may
    read a clock): its value changes only when a fact arrives, so a clock compared with it
    comes due at a time known between facts."""
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    calls = {n.func.id for n in ast.walk(node)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    names -= calls
    if not names or not names <= (set(parameters) | FIGURES):
        return None
    try:
        return compile_expression(ast.unparse(node), allowed_names=set(parameters) | FIGURES)
    except ExpressionError:
        return None


def _constant(node: ast.expr, parameters: Mapping[str, float]) -> Any:
    """The value of an operand that reads only numbers and parameters, else _NOT_CONSTANT."""
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    if not names <= set(parameters):
        return _NOT_CONSTANT
    try:
        value = compile_expression(ast.unparse(node)).evaluate(parameters)
    except ExpressionError:
        return _NOT_CONSTANT
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _NOT_CONSTANT
    return value


@dataclass
class RulesInForce:
    """The rule set the service uses now; a reload validates the file first and swaps the
    whole set, so a bad file changes nothing."""

    path: Path
    rules: RuleSet
    loaded_at: Any = None

    @classmethod
    def load(cls, path: Path) -> RulesInForce:
        from datetime import UTC, datetime

        return cls(path, load_rules(path), datetime.now(UTC))

    def reload(self) -> RuleSet:
        from datetime import UTC, datetime

        rules = load_rules(self.path)
        self.rules, self.loaded_at = rules, datetime.now(UTC)
        return rules
