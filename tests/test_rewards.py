"""GRPO rewards on constructed completions, and the clip-specific grounding figure."""

import pytest

from conftest import ROOT
from reasoning.training.config import load_recipe
from reasoning.errors import RecipeError
from reasoning.explain import other_clips, verify_rationales
from reasoning.evaluation.metrics import rationale_metrics
from reasoning.training.rewards import (Completion, check_weights, format_reward, grounding_reward, label_reward,
                               votes_reward)
from test_rationales import ANGRY, TRANSCRIPT, make_evidence

LABELS = ["anger", "sadness", "neutral"]
ROW = {"id": "a", "speaker": "s1", "emotion": "anger", "evidence": ANGRY, "transcript": TRANSCRIPT,
       "emotion_votes": {"anger": 3, "sadness": 1}}
QUIET = make_evidence({"f0_mean_st": 0.0, "loudness": -1.5, "syllable_rate": -0.8, "f0_sd_st": 0.1})


def c(text, truncated=False):
    return Completion(text, LABELS, truncated)


def test_label_reward_is_one_for_the_gold_label_in_either_order():
    assert label_reward(c("anger: a loud voice."), ROW) == 1.0
    assert label_reward(c("a loud voice, so: anger"), ROW) == 1.0
    assert label_reward(c("sadness: a loud voice."), ROW) == 0.0
    assert label_reward(c("a loud voice"), ROW) == 0.0  # no label stated


def test_votes_reward_is_the_share_of_votes_for_the_stated_label():
    assert votes_reward(c("anger: loud."), ROW) == 0.75
    assert votes_reward(c("sadness: loud."), ROW) == 0.25
    assert votes_reward(c("neutral: loud."), ROW) == 0.0
    no_votes = {**ROW, "emotion_votes": None}  # the gold label is the one vote
    assert votes_reward(c("anger: loud."), no_votes) == 1.0
    assert votes_reward(c("sadness: loud."), no_votes) == 0.0


def test_grounding_reward_counts_accepted_minus_rejected_evidence_claims():
    assert grounding_reward(c("anger: a very loud voice and the words 'get out'."), ROW) == 1.0
    # loud (accepted), raised pitch (rejected: z -1.2): (1 - 1) / 2
    assert grounding_reward(c("anger: raised pitch and a loud voice."), ROW) == 0.0
    # loud (accepted), raised pitch, quiet-not-found quote 'leave now' (rejected): (1 - 2) / 3
    assert grounding_reward(c("anger: raised pitch, a loud voice, 'leave now'."), ROW) == pytest.approx(-1 / 3)
    assert grounding_reward(c("anger: she is furious."), ROW) == -1.0  # cites no evidence
    # the same words against another clip's evidence: the loud voice is not there
    assert grounding_reward(c("anger: a loud voice."), {**ROW, "evidence": QUIET}) == -1.0
    with pytest.raises(ValueError, match="no measured evidence"):
        grounding_reward(c("anger: loud."), {**ROW, "evidence": None})


def test_format_reward_needs_a_stated_label_and_an_end_before_the_limit():
    assert format_reward(c("anger: a loud voice."), ROW) == 1.0
    assert format_reward(c("sadness: a loud voice."), ROW) == 1.0  # any label of the set
    assert format_reward(c("anger: a loud voice and", truncated=True), ROW) == 0.0
    assert format_reward(c("furious: loud."), ROW) == 0.0


def test_an_unknown_reward_name_lists_the_valid_ones():
    with pytest.raises(RecipeError, match="unknown reward `lable`; the rewards are label, votes, grounding, format"):
        check_weights({"lable": 1.0})
    with pytest.raises(RecipeError, match="grpo.rewards: unknown reward `lable`"):
        load_recipe(ROOT / "recipes" / "tiny.yaml", ["grpo.rewards={lable: 1.0}"])
    with pytest.raises(RecipeError, match="at least one reward a weight above 0"):
        check_weights({"label": 0.0})


def test_other_clip_is_the_next_clip_of_the_speaker_with_another_label():
    rows = [{"id": "s1_a", "speaker": "s1", "emotion": "anger", "evidence": ANGRY},
            {"id": "s1_b", "speaker": "s1", "emotion": "anger", "evidence": ANGRY},
            {"id": "s1_c", "speaker": "s1", "emotion": "sadness", "evidence": QUIET},
            {"id": "s2_a", "speaker": "s2", "emotion": "anger", "evidence": ANGRY},
            {"id": "s1_d", "speaker": "s1", "emotion": "anger", "evidence": None}]
    assert other_clips(rows) == [2, 2, 0, None, 2]
    assert other_clips(rows[::-1]) == [2, None, 4, 2, 2]  # the same clips (s1_c, s1_a), whatever the order


def test_clip_specific_grounding_is_zero_for_a_rationale_that_fits_any_clip():
    rows = [{"id": "s1_a", "speaker": "s1", "emotion": "anger", "evidence": ANGRY, "transcript": TRANSCRIPT},
            {"id": "s1_b", "speaker": "s1", "emotion": "sadness", "evidence": QUIET, "transcript": "fine."}]
    specific = {"label_set": LABELS, "rationales": [
        {"text": "anger: a loud voice.", "emotion": "anger", "verdict": None},
        {"text": "sadness: a quiet voice and slower speech.", "emotion": "sadness", "verdict": None}]}
    m = rationale_metrics(verify_rationales(specific, rows)["rationales"], ["anger", "sadness"])
    assert specific["rationales"][0]["other_clip"] == "s1_b"
    assert (m["pass_rate"], m["other_clip_pass_rate"], m["clip_specific_grounding"]) == (1.0, 0.0, 1.0)
    generic = {"label_set": LABELS, "rationales": [  # "usual intonation" holds on both clips
        {"text": "anger: usual intonation.", "emotion": "anger", "verdict": None},
        {"text": "sadness: usual intonation.", "emotion": "sadness", "verdict": None}]}
    m = rationale_metrics(verify_rationales(generic, rows)["rationales"], ["anger", "sadness"])
    assert (m["pass_rate"], m["clip_specific_grounding"]) == (1.0, 0.0)
