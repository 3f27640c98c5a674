"""Rewards of the GRPO stage (:mod:`reasoning.training.grpo`): each scores one completion against its
manifest row, and the recipe's ``grpo.rewards`` weighs them into one reward per completion.

A completion is what the model writes to the rationale prompt, ``"label: rationale"`` (or
``"rationale, so: label"`` under ``prompt.rationale_order: rationale_then_label``):

* ``label``: 1 when the stated label is the gold label, else 0;
* ``votes``: the share of the annotators' votes (``emotion_votes``) that went to the stated
  label, so a plausible minority reading earns part of the credit (arXiv 2503.22711); a row
  without votes counts its gold label as the one vote, which makes this ``label``;
* ``grounding``: (claims the verifier accepts - claims it rejects) / claims made, over the
  evidence claims (acoustic cues and quoted words) judged against the clip's own measured
  evidence by :func:`reasoning.rationales.verify.verify`; -1 for a completion that cites no
  evidence, which the verifier fails too. The stated label is ``label``'s business;
* ``format``: 1 when the completion states one of the labels where the rationale order puts
  it and ended by itself (the end-of-turn token came before the length limit), else 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from reasoning.errors import RecipeError


@dataclass
class Completion:
    """One sampled completion: its decoded ``text``, the recipe's label set, and whether it
    was cut at ``grpo.max_completion_tokens`` before the end-of-turn token."""

    text: str
    labels: list[str]
    truncated: bool = False


def _stated(c: Completion) -> str | None:
    from reasoning.explain import stated_emotion

    return stated_emotion(c.text, c.labels)


def label_reward(c: Completion, row: dict) -> float:
    """1.0 when the stated label is the row's gold ``emotion``."""
    return float(_stated(c) is not None and _stated(c) == row.get("emotion"))


def votes_reward(c: Completion, row: dict) -> float:
    """The share of the row's ``emotion_votes`` (within the label set) for the stated label."""
    from reasoning.tasks.collate import vote_distribution

    stated = _stated(c)
    return 0.0 if stated is None else vote_distribution(row, c.labels)[c.labels.index(stated)]


def grounding_reward(c: Completion, row: dict) -> float:
    """(accepted - rejected) / made over the evidence claims, in [-1, 1]; -1 with none."""
    from reasoning.evidence.measure import has_evidence
    from reasoning.explain import label_first
    from reasoning.rationales.verify import verify

    if not has_evidence(row):
        raise ValueError(f"row {row.get('id')}: no measured evidence to ground a rationale in")
    verdict = verify(label_first(c.text, c.labels), row["evidence"], row.get("emotion") or "",
                     row.get("transcript"))
    judged = [cl["supported"] for cl in verdict.claims if cl["kind"] in ("cue", "quote")]
    if not judged:
        return -1.0
    return (2 * sum(judged) - len(judged)) / len(judged)


def format_reward(c: Completion, row: dict) -> float:
    """1.0 when a label of the set is stated and the completion ended before the limit."""
    return float(_stated(c) is not None and not c.truncated)


REWARDS: dict[str, Callable[[Completion, dict], float]] = {
    "label": label_reward, "votes": votes_reward, "grounding": grounding_reward, "format": format_reward}


def check_weights(weights: dict, where: str = "grpo.rewards") -> None:
    """Refuse an unknown reward name, a weight that is not a number, or no positive weight."""
    for name, weight in weights.items():
        if name not in REWARDS:
            raise RecipeError(f"{where}: unknown reward `{name}`; the rewards are {', '.join(REWARDS)}.")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise RecipeError(f"{where}.{name}: the weight {weight!r} is not a number.")
    if not any(w > 0 for w in weights.values()):
        raise RecipeError(f"{where}: give at least one reward a weight above 0, e.g. {{label: 1.0}}.")
