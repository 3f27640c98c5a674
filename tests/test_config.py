import re

import pytest
import yaml

from reasoning.training.config import describe_fields, load_recipe, parse_overrides, recipe_hash, save_recipe
from reasoning.errors import RecipeError

from conftest import ROOT, tiny_recipe_tree

RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.yaml"))


def test_the_readme_names_only_shipped_recipes():
    named = set(re.findall(r"recipes/([\w./]+\.yaml)", (ROOT / "README.md").read_text()))
    shipped = {p.name for p in RECIPES} | {f"accelerate/{p.name}" for p in (ROOT / "recipes" / "accelerate").glob("*.yaml")}
    assert {"quickstart.yaml", "emodb_real_cpu.yaml", "small_lora.yaml", "large_qlora.yaml"} <= named
    assert named <= shipped, f"the README names recipes that are not shipped: {sorted(named - shipped)}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_parses(path):
    recipe = load_recipe(path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and ("emoreason" in first or "accelerate launch" in first), \
        "every recipe starts with the command that launches it"
    assert recipe.data.tasks


def test_unknown_key_names_the_closest_valid_one(tmp_path):
    tree = tiny_recipe_tree(tmp_path)
    tree["train"]["learning_rate"] = 1e-3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "bad.yaml" in msg and "train.learning_rate" in msg

    tree["train"].pop("learning_rate")
    tree["model"]["speech"]["num_token"] = 4
    with pytest.raises(RecipeError, match=r"model\.speech\.num_token.*Did you mean `model\.speech\.num_tokens`"):
        load_recipe(tree=tree)


def test_dotted_overrides_win_and_are_typed(tmp_path):
    tree = tiny_recipe_tree(tmp_path)
    recipe = load_recipe(tree=tree, overrides=["train.lr=1e-4", "data.batch_size=3",
                                               "data.tasks={emotion: 1.0}", "model.speech.freeze=false"])
    assert recipe.train.lr == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as a string: coerced
    assert recipe.data.batch_size == 3
    assert recipe.data.tasks == {"emotion": 1.0}
    assert recipe.model.speech.freeze is False
    assert parse_overrides(["a.b=[1, 2]"]) == [("a.b", [1, 2])]
    with pytest.raises(RecipeError, match="section.field=value"):
        load_recipe(tree=tree, overrides=["train.lr"])
    with pytest.raises(RecipeError, match="data.batch_size"):
        load_recipe(tree=tree, overrides=["data.batch_size=many"])


@pytest.mark.parametrize("override, message", [
    ("data.schedule=random", "data.schedule"),
    ("data.tasks={speak: 1}", "unknown task"),
    ("data.schedule=phased", "data.phases is empty"),
    ("data.labels=[]", "data.labels is empty"),
    ("model.fusion=feature", "num_tokens must equal"),
    ("model.speech.mel_policy=full", "mel_policy"),
    ("heads.va_loss=l1", "heads.va_loss"),
])
def test_cross_field_checks_run_before_any_model(tmp_path, override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(tree=tiny_recipe_tree(tmp_path), overrides=[override])


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe(tree=tiny_recipe_tree(tmp_path))
    save_recipe(recipe, tmp_path / "r.yaml")
    again = load_recipe(tmp_path / "r.yaml")
    assert again == recipe and recipe_hash(again) == recipe_hash(recipe)


def test_help_lists_every_key_with_its_help():
    text = "\n".join(describe_fields())
    for key in ("model.speech.mel_policy", "data.schedule", "train.grad_accum", "heads.emotion_loss"):
        assert key in text
    assert "Whisper" in text


def test_mixed_precision_no_unquoted_is_accepted(tmp_path):
    """YAML 1.1 reads an unquoted `no` as False; `train.mixed_precision: no` means "no"."""
    tree = tiny_recipe_tree(tmp_path / "run", tmp_path / "m.jsonl")
    tree["train"]["mixed_precision"] = yaml.safe_load("no")
    assert load_recipe(tree=tree).train.mixed_precision == "no"
    assert load_recipe(tree=tiny_recipe_tree(tmp_path / "run", tmp_path / "m.jsonl"),
                       overrides=["train.mixed_precision=no"]).train.mixed_precision == "no"
    tree["train"]["mixed_precision"] = True
    with pytest.raises(RecipeError, match="mixed_precision"):
        load_recipe(tree=tree)


def test_the_grpo_recipe_refines_the_supervised_recipe_as_shipped():
    # The GRPO benchmark reuses the folds trained by emodb_real_cpu.yaml (same output_dir): if
    # the two drift apart, the folds it trains itself differ from the ones it reuses.
    supervised = yaml.safe_load((ROOT / "recipes" / "emodb_real_cpu.yaml").read_text())
    grpo = yaml.safe_load((ROOT / "recipes" / "emodb_real_cpu_grpo.yaml").read_text())
    assert grpo.pop("grpo")["benchmark"] is True
    assert grpo == supervised
