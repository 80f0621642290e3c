"""Reasons the cheap way give exactly the reasons of the plain way (one prediction per
counterfactual), for every model kind and the prior, on many kinds of customer."""

from __future__ import annotations

import random

import pytest

from services.scoring.btyd import BTYDLogisticClassifier
from services.scoring.domain import (
    FACTS,
    LOCAL_INPUTS,
    MISSING,
    PACE_FACTS,
    OPTIONAL_FACTS,
    REFERENCE,
    Facts,
    counterfactual_facts,
    counterfactuals_with,
    reasons_for,
)
from services.scoring.model import (
    BEHAVIOUR,
    KINDS,
    ChurnModel,
    assess_facts,
    inputs_of,
    pace_inputs_of,
)

CUTS = (0.25, 0.5, 0.75)


def varied(rng: random.Random) -> Facts:
    """Customers from everywhere the inputs branch: at or away from the reference, silent
    longer than their tenure, new, no salary or NPS, capped values, zeros and negatives."""
    facts: Facts = {}
    for fact in FACTS:
        roll = rng.random()
        if roll < 0.2:
            value = fact.reference
        elif roll < 0.3:
            value = 0.0
        elif roll < 0.4 and fact.name in OPTIONAL_FACTS:
            value = MISSING
        else:
            value = round(rng.uniform(-0.5, 4.0) * (abs(fact.reference) + rng.uniform(0, 30)), 2)
        facts[fact.name] = value
    for name in ("purchase_trend", "balance_change", "login_trend"):
        facts[name] = rng.choice([round(rng.uniform(-1, 3), 4), 0.0, -1.0, 3.0])
    if rng.random() < 0.3:
        facts["tenure_days"] = round(rng.uniform(0, 120), 2)  # newer than the horizon
    if rng.random() < 0.2:
        facts["recency_days"] = facts["tenure_days"] + rng.uniform(0, 50)  # silent since joining
    if rng.random() < 0.2:
        facts["open_complaints"] = float(rng.choice([3, 4, 7]))  # capped input
    return facts


def customers(n: int, seed: int) -> list[Facts]:
    rng = random.Random(seed)
    return [varied(rng) for _ in range(n)]


def trained(kind: str, seed: int = 5) -> ChurnModel:
    rng = random.Random(seed)
    model = ChurnModel(horizon_days=90, min_labels=50, kind=kind)
    for facts in customers(1200, seed):
        risk = facts["recency_days"] / 100 - facts["purchase_trend"] + facts["open_complaints"]
        model.learn(facts, risk + rng.gauss(0, 0.5) > 1.0)
    return model


MODELS = {
    "prior": lambda: ChurnModel(horizon_days=90, min_labels=10**9),
    **{kind: (lambda k=kind: trained(k)) for kind in KINDS},
    "btyd-logit untrained": lambda: ChurnModel(horizon_days=90, min_labels=0),
}


def test_local_facts_move_only_their_own_inputs() -> None:
    """The table the cheap way relies on: setting a listed fact back to the reference moves
    only its inputs, and to the values they take with every listed fact at the reference."""
    for facts in customers(400, seed=11):
        x = inputs_of(facts, 90)
        all_local = dict(facts, **{n: REFERENCE[n] for n in LOCAL_INPUTS})
        at_reference = inputs_of(all_local, 90)
        for name, own in LOCAL_INPUTS.items():
            moved = inputs_of(dict(facts, **{name: REFERENCE[name]}), 90)
            assert moved == {**x, **{k: at_reference[k] for k in own}}, (name, facts)


def test_pace_facts_move_only_the_pace_inputs() -> None:
    """The other half: a pace fact set back to the reference moves no input outside
    `pace_inputs_of`, which gives those inputs exactly as `inputs_of` does; and every fact
    is either local or a pace fact."""
    assert set(PACE_FACTS) | set(LOCAL_INPUTS) == set(REFERENCE)
    assert not set(PACE_FACTS) & set(LOCAL_INPUTS)
    for facts in customers(400, seed=13):
        x = inputs_of(facts, 90)
        pace = pace_inputs_of(facts, 90)
        assert pace == {k: x[k] for k in pace}
        for name in PACE_FACTS:
            counterfactual = dict(facts, **{name: REFERENCE[name]})
            moved = inputs_of(counterfactual, 90)
            assert moved == {**x, **pace_inputs_of(counterfactual, 90)}, (name, facts)


def test_the_table_names_real_facts_and_inputs() -> None:
    x = inputs_of(REFERENCE, 90)
    for name, own in LOCAL_INPUTS.items():
        assert name in REFERENCE and own and all(k in x for k in own)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cheap_counterfactuals_equal_one_prediction_each(name: str) -> None:
    model = MODELS[name]()
    plain = counterfactuals_with(model.predict)
    for facts in customers(300, seed=23):
        names = counterfactual_facts(facts)
        assert model.counterfactuals(facts, names) == plain(facts, names)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_assessments_give_the_reasons_of_the_plain_way(name: str) -> None:
    model = MODELS[name]()
    some = 0
    for facts in customers(300, seed=29):
        a = assess_facts(model, facts, CUTS, 3)
        assert a.reasons == reasons_for(model.predict, facts, 3)
        assert a.probability == round(model.predict(facts), 6)
        some += bool(a.reasons)
    assert some > 0, f"{name}: no customer had a reason"


def test_the_champion_scores_variants_as_one_input_each() -> None:
    model = trained("btyd-logit").estimator
    assert isinstance(model, BTYDLogisticClassifier)
    rng = random.Random(31)
    for facts in customers(200, seed=37):
        x = inputs_of(facts, 90)
        other = inputs_of(varied(rng), 90)
        keys = sorted(other)
        variants = [{}, {k: other[k] for k in rng.sample(keys, 1)},
                    {k: other[k] for k in rng.sample(BEHAVIOUR, 2)},
                    {k: other[k] for k in ("recency_days", "tenure_days")},
                    {k: other[k] for k in rng.sample(keys, 5)}, dict(other),
                    {"not_an_input": 1.0}]
        expected = [model.predict_proba_one({**x, **v})[True] for v in variants]
        assert model.predict_proba_variants(x, variants) == expected


def test_facts_at_the_reference_or_missing_are_not_asked_about() -> None:
    facts = dict(REFERENCE, recency_days=40.0, last_nps=MISSING, days_since_salary=MISSING)
    assert counterfactual_facts(facts) == ["recency_days"]
