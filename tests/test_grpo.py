"""The GRPO stage: TRL's objective computed our way, bad input refused, and a run on the tiny
models whose rewards move while only the LoRA adapter changes."""

import json
import logging

import pytest
import torch

from conftest import TINY
from reasoning.errors import RecipeError
from reasoning.training.grpo import check_rows, completion_logps, group_advantages, grpo_loss


@pytest.fixture(scope="module")
def trl_trainer(tmp_path_factory):
    """TRL's own GRPOTrainer around a tiny random text-only LLM (data/tiny/llm.json)."""
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(TINY / "llm.json"))
    tokenizer = AutoTokenizer.from_pretrained(TINY / "tokenizer")
    # beta 0 at construction: TRL would build the reference model by reloading the policy from
    # its hub id, which a model built from a config has none of; the reference log-probs are
    # given to the loss below, so the KL term is switched on afterwards.
    args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("trl")), beta=0.0, epsilon=0.2, epsilon_high=0.28,
                      num_generations=4, per_device_train_batch_size=8, max_completion_length=6,
                      temperature=0.7, report_to="none", use_cpu=True, gradient_checkpointing=False,
                      bf16=False)  # TRL defaults to bf16 autocast; our loop runs the recipe's precision
    trainer = GRPOTrainer(model=llm, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
                          train_dataset=Dataset.from_dict({"prompt": ["hello"] * 8}), processing_class=tokenizer)
    trainer.beta = trainer.args.beta = 0.04
    trainer.model.eval()  # no gradient accumulation normaliser (TRL divides by it in training)
    return trainer


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_grpo_loss_agrees_with_trl_on_a_text_only_model(trl_trainer, loss_type, level):
    trainer = trl_trainer
    trainer.loss_type = trainer.args.loss_type = loss_type
    trainer.importance_sampling_level = trainer.args.importance_sampling_level = level
    model = trainer.model
    g = torch.Generator().manual_seed(1)
    N, P, T = 8, 5, 6
    vocab = model.config.vocab_size
    prompt_ids = torch.randint(0, vocab, (N, P), generator=g)
    completion_ids = torch.randint(0, vocab, (N, T), generator=g)
    completion_mask = torch.ones(N, T, dtype=torch.long)
    completion_mask[::3, 4:] = 0  # some completions ended early
    prompt_mask = torch.ones(N, P, dtype=torch.long)
    with torch.no_grad():
        base = completion_logps(model, model.get_input_embeddings()(prompt_ids), prompt_mask, completion_ids,
                                completion_mask, trainer.args.temperature)
    # Old and reference policies away from the current one, so that clipping and KL both act.
    old = base + 0.4 * torch.randn(N, T, generator=g)
    ref = base + 0.3 * torch.randn(N, T, generator=g)
    advantages = torch.randn(N, generator=g)

    model.zero_grad()
    theirs = trainer._compute_loss(model, {
        "prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
        "completion_mask": completion_mask, "advantages": advantages, "old_per_token_logps": old,
        "ref_per_token_logps": ref})
    theirs.backward()
    their_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]

    model.zero_grad()
    logps = completion_logps(model, model.get_input_embeddings()(prompt_ids), prompt_mask, completion_ids,
                             completion_mask, trainer.args.temperature)
    ours, stats = grpo_loss(logps, old, ref, advantages, completion_mask, trainer.args)
    ours.backward()
    our_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]

    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-7)
    assert len(our_grads) == len(their_grads) > 0
    for a, b in zip(our_grads, their_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert stats["kl"] > 0 and stats["clip_ratio"] > 0  # the terms that could disagree did act


def test_equal_rewards_in_a_group_give_zero_advantage_and_are_logged(caplog):
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.5])  # first group all equal
    with caplog.at_level(logging.INFO, logger="reasoning.training.grpo"):
        adv, zero_std = group_advantages(rewards, 3)
    assert torch.isfinite(adv).all()
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    assert zero_std.tolist() == [True] * 3 + [False] * 3
    assert adv[3] < 0 < adv[4] and adv[3:].sum().abs() < 1e-5
    assert "1 of 2 groups have equal rewards: advantage 0" in caplog.text
    same, _ = group_advantages(torch.ones(4), 4, scale="batch")
    assert same.tolist() == [0.0] * 4


def test_rows_without_evidence_are_refused_when_grounding_is_weighted():
    rows = [{"id": "a", "emotion": "anger", "evidence": {"z": {}}},
            {"id": "b", "emotion": "anger", "evidence": None},
            {"id": "c", "emotion": "anger", "evidence": {"error": "unreadable"}}]
    with pytest.raises(RecipeError, match=r"2 of 3 training rows of m\.jsonl have no measured evidence "
                                          r"\(e\.g\. b\): run `emoreason evidence --manifest m\.jsonl`"):
        check_rows(rows, {"label": 1.0, "grounding": 0.5}, "m.jsonl")
    check_rows(rows, {"label": 1.0, "grounding": 0.0}, "m.jsonl")  # not weighted: nothing to refuse


@pytest.mark.slow
def test_grpo_on_the_tiny_models_raises_the_rewards_and_changes_only_the_adapter(tmp_path):
    from conftest import SAMPLES, tiny_recipe_tree
    from reasoning.training.checkpoint import load_for_inference
    from reasoning.training.config import load_recipe
    from reasoning.training.grpo import HISTORY_FILE, PLOT_FILE, GrpoRecipe, adapter_parameters
    from reasoning.training.train import TrainRecipe

    rows = [json.loads(x) for x in SAMPLES.read_text().splitlines()][:8]
    for r in rows:
        r["audio"] = str(SAMPLES.parent / r["audio"])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Supervised first, long enough that some completions state a label: the rewards then
    # differ within a group and there is something to learn.
    sup = TrainRecipe(load_recipe(tree=tiny_recipe_tree(
        tmp_path / "sup", manifest, train={"max_steps": 100, "epochs": 100, "lr": 3e-3},
        data={"tasks": {"rationale": 1.0}, "batch_size": 4})))
    sup.setup()
    sup.train()
    tree = tiny_recipe_tree(tmp_path / "sup", manifest, grpo={
        "output_dir": str(tmp_path / "grpo"), "rewards": {"label": 1.0, "format": 1.0}, "max_steps": 20,
        "clips_per_step": 4, "num_generations": 4, "max_completion_tokens": 16, "lr": 1e-3})
    grpo = GrpoRecipe(load_recipe(tree=tree))
    grpo.setup()
    adapter = set(adapter_parameters(grpo.model))
    before = {n: p.detach().clone() for n, p in grpo.model.named_parameters()}
    history = grpo.train()

    first, last = [sum(h["reward"] for h in part) / 4 for part in (history[:4], history[-4:])]
    assert last > first + 0.2, [h["reward"] for h in history]
    assert all(0 <= h["rewards/label/mean"] <= 1 and h["kl"] >= 0 for h in history)
    changed = {n for n, p in grpo.model.named_parameters() if not torch.equal(p, before[n])}
    assert {f"llm.{n}" for n in adapter} == changed  # every adapter tensor moved, nothing else
    logged = [json.loads(x) for x in (tmp_path / "grpo" / HISTORY_FILE).read_text().splitlines()]
    assert [h["step"] for h in logged] == list(range(1, 21)) and logged[-1]["reward"] == history[-1]["reward"]
    assert (tmp_path / "grpo" / PLOT_FILE).stat().st_size > 0
    reloaded, *_ = load_for_inference(tmp_path / "grpo")  # a checkpoint like any other
    for n, p in reloaded.named_parameters():
        torch.testing.assert_close(p, dict(grpo.model.named_parameters())[n], rtol=0, atol=0)


def test_the_cli_refuses_rows_without_evidence_before_building_the_model(trained, tmp_path, capsys, monkeypatch):
    import yaml

    from conftest import tiny_recipe_tree
    from reasoning.training import grpo
    from reasoning.cli import main

    trainer, _ = trained

    def built(*a, **kw):
        raise AssertionError("the model was built before the rows were checked")

    monkeypatch.setattr(grpo, "load_for_inference", built)
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_tree(tmp_path / "unused", grpo={"output_dir": str(tmp_path / "g")})))
    manifest = trainer.recipe.data.train_manifest
    assert main(["grpo", "--config", str(recipe), "--checkpoint", str(trainer.output_dir)]) == 2
    err = capsys.readouterr().err
    assert f"8 of 8 training rows of {manifest} have no measured evidence" in err
    assert f"run `emoreason evidence --manifest {manifest}`" in err


@pytest.mark.parametrize("sft_weight", [0.0, 1.0])
def test_the_supervised_emotion_loss_anchors_the_adapter_when_weighted(trained, tmp_path, sft_weight):
    """GRPO trains on the rationale prompt only; the label scoring of the emotion prompt
    drifted with it (fold speaker-03: UA 64.2 -> 59.8 in 20 steps). ``grpo.sft_weight`` adds the
    supervised emotion loss of the step's clips. Here every completion gets the same reward,
    so GRPO alone has nothing to learn and the adapter must stay as it was; with the anchor it
    moves, and the emotion loss of those clips falls."""
    from conftest import tiny_recipe_tree
    from reasoning.training.config import load_recipe
    from reasoning.training.grpo import GrpoRecipe

    trainer, _ = trained
    tree = tiny_recipe_tree(tmp_path / "unused", grpo={
        "output_dir": str(tmp_path / "grpo"), "rewards": {"format": 1.0}, "max_steps": 3, "beta": 0.0,
        "clips_per_step": 8, "num_generations": 2, "max_completion_tokens": 4, "lr": 1e-3,
        "sft_weight": sft_weight})
    grpo = GrpoRecipe(load_recipe(tree=tree), checkpoint=trainer.output_dir,
                      reward_funcs={"format": lambda completion, row: 1.0})
    grpo.setup()
    before = {n: p.detach().clone() for n, p in grpo.params.items()}
    history = grpo.train()
    moved = any(not torch.equal(p, before[n]) for n, p in grpo.params.items())
    assert moved is (sft_weight > 0)
    if sft_weight:
        assert history[-1]["sft_loss"] < history[0]["sft_loss"], [h["sft_loss"] for h in history]
    else:
        assert "sft_loss" not in history[0]
