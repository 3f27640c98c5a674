"""Dominance: a VAD head (`heads.dimensions: [valence, arousal, dominance]`) trained with CCC
per dimension, and the `msp-podcast` evaluation protocol that reports Development and each
test set apart, with the CCC of every dimension."""

import json

import numpy as np
import pytest
import torch

from reasoning.evaluation.benchmark import run_benchmark
from reasoning.training.config import load_recipe
from reasoning.errors import RecipeError, UserError
from reasoning.evaluation.evaluate import checkpoint_predictor, evaluate_rows
from reasoning.explain import Explainer, format_summary
from reasoning.evaluation.folds import get_protocol, iter_folds, select_rows
from reasoning.manifest import read_manifest, write_manifest
from reasoning.evaluation.metrics import ccc
from reasoning.training.train import TrainRecipe

from conftest import SAMPLES, tiny_recipe_tree

MSP_LABELS = ["anger", "sadness", "happiness", "surprise", "fear", "disgust", "contempt", "neutral"]
RENAME = {"angry": "anger", "sad": "sadness", "happy": "happiness", "neutral": "neutral"}
VAD = ["valence", "arousal", "dominance"]


def msp_like_manifest(tmp_path):
    """The 48 bundled clips as an MSP-Podcast manifest: MSP labels, dominance, splits train
    (spk1, spk2), dev (spk3), test1 and test2 (spk4), and an 'other' row in train."""
    rows = [json.loads(x) for x in SAMPLES.read_text().splitlines()]
    for i, r in enumerate(rows):
        r["audio"] = str(SAMPLES.parent / r["audio"])
        r["emotion"] = RENAME[r["emotion"]]
        r["dominance"] = round(0.8 * r["arousal"] - 0.1 + 0.02 * (i % 5), 4)
        r["split"] = {"spk1": "train", "spk2": "train", "spk3": "dev"}.get(
            r["speaker"], "test1" if r["id"].endswith(("_0", "_1")) else "test2")
    rows[1]["emotion"], rows[1]["emotion_orig"] = "other", "no_agreement"
    return write_manifest(rows, tmp_path / "msp.jsonl")


def test_heads_dimensions_are_checked():
    tree = tiny_recipe_tree("runs/x")
    tree["heads"]["dimensions"] = ["valence", "dominance"]
    with pytest.raises(RecipeError, match=r"heads.dimensions: \['valence', 'dominance'\] is not one of "
                                          r"\[valence, arousal\] or \[valence, arousal, dominance\]"):
        load_recipe(tree=tree)


def test_msp_protocol_reports_dev_and_each_test_set_apart(tmp_path):
    rows = read_manifest(msp_like_manifest(tmp_path))
    protocol = get_protocol("msp-podcast")
    kept, labels, excluded = select_rows(rows, protocol)
    assert labels == MSP_LABELS and excluded == {"label:other": 1}
    folds = list(iter_folds(kept, protocol))
    assert [(f.name, len(f.train), len(f.dev), len(f.test)) for f in folds] == [
        ("dev", 23, 0, 12), ("test1", 23, 12, 8), ("test2", 23, 12, 4)]

    def predict(fold, test_rows):
        """A model stand-in: the right label, VAD near the targets, a different error per fold."""
        rng = np.random.default_rng(len(fold))
        scores = np.array([[float(c == r["emotion"]) for c in MSP_LABELS] for r in test_rows])
        return {"labels": [r["emotion"] for r in test_rows], "scores": scores, "label_set": MSP_LABELS,
                **{d: [r[d] + rng.normal(0, 0.2) for r in test_rows] for d in VAD}}

    out = tmp_path / "eval"
    result = evaluate_rows(rows, protocol, out, baselines=["majority"], predictor=predict)
    model = result["systems"]["model"]
    records = [json.loads(x) for x in (out / "predictions" / "model.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    for fold in ("dev", "test1", "test2"):
        va = model["per_fold"][fold]["va"]["annotated"]
        mine = [r for r in records if r["fold"] == fold]
        for d in VAD:   # the CCC of each dimension, against the reference formula
            assert va[d]["n"] == len(mine)
            assert va[d]["ccc"] == pytest.approx(ccc([r[d] for r in mine], [by_id[r["id"]][d] for r in mine]))
    assert model["per_fold"]["test1"]["va"]["annotated"]["dominance"]["ccc"] != \
        model["per_fold"]["test2"]["va"]["annotated"]["dominance"]["ccc"]
    report = (out / "report.md").read_text()
    for fold, n in (("dev", 12), ("test1", 8), ("test2", 4)):
        assert f"### {fold}: {n} test utterances" in report
    assert report.count("| CCC valence | CCC arousal | CCC dominance |") == 3
    assert "reported apart" in report and "mean ± sample std" not in report


def test_a_vad_head_trains_and_is_evaluated_with_ccc_per_dimension(tmp_path):
    manifest = msp_like_manifest(tmp_path)
    tree = tiny_recipe_tree(tmp_path / "run", manifest, train={"max_steps": 4, "lr": 1e-2},
                            data={"labels": MSP_LABELS + ["other"], "train_split": ["train"],
                                  "tasks": {"emotion": 1.0, "va": 1.0}},
                            heads={"dimensions": VAD})
    trainer = TrainRecipe(load_recipe(tree=tree))
    trainer.setup()
    head = trainer.unwrapped.va_head
    assert head.mlp[-1].out_features == 3
    before = {n: p.detach().clone() for n, p in head.named_parameters()}
    history = trainer.train()
    assert all(not torch.equal(before[n], p) for n, p in head.named_parameters())
    va_steps = [h for h in history if h["task"] == "va"]
    assert va_steps and all({"ccc_valence", "ccc_arousal", "ccc_dominance"} <= set(h) for h in va_steps)
    assert all(-1 <= h["ccc_dominance"] <= 1 for h in va_steps)
    # the VA loss is the mean over the three dimensions of 1 - CCC
    for h in va_steps:
        assert h["va"] == pytest.approx(1 - (h["ccc_valence"] + h["ccc_arousal"] + h["ccc_dominance"]) / 3,
                                        abs=1e-5)

    rows = read_manifest(manifest)
    protocol = get_protocol("msp-podcast")
    kept, _, _ = select_rows(rows, protocol)
    names = [f.name for f in iter_folds(kept, protocol)]
    with pytest.raises(UserError, match="has no sub-folder for"):
        checkpoint_predictor(trainer.output_dir, names)      # folds that do not share training rows
    predictor, hashes = checkpoint_predictor(trainer.output_dir, names, shared=True)
    assert len(set(hashes.values())) == 1
    result = evaluate_rows(rows, protocol, tmp_path / "eval", baselines=[], predictor=predictor)
    model = result["systems"]["model"]
    for fold in names:
        va = model["per_fold"][fold]["va"]["annotated"]
        assert set(va) == set(VAD) and all(va[d]["n"] > 0 for d in VAD)
    records = [json.loads(x) for x in (tmp_path / "eval" / "predictions" / "model.jsonl").read_text().splitlines()]
    assert all(-1 <= r["dominance"] <= 1 for r in records) and len({r["dominance"] for r in records}) > 1
    # explain shows the third dimension too
    (pred,) = Explainer(trainer.output_dir).predict(rows[:1], rationale=False, progress=False)
    assert set(VAD) <= set(pred) and f"dominance {pred['dominance']:+.2f}" in format_summary(pred)


def test_benchmark_trains_one_model_for_every_test_set(tmp_path):
    manifest = msp_like_manifest(tmp_path)
    tree = tiny_recipe_tree(tmp_path / "bench", manifest, train={"max_steps": 2},
                            data={"labels": MSP_LABELS, "tasks": {"emotion": 1.0, "va": 1.0}},
                            heads={"dimensions": VAD},
                            eval={"protocol": "msp-podcast", "baselines": ["majority"]})
    result = run_benchmark(load_recipe(tree=tree))
    root = tmp_path / "bench"
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["eval", "model"]
    trained = read_manifest(root / "model" / "train.jsonl")
    assert {r["split"] for r in trained} == {"train"} and len(trained) == 23
    assert [f["name"] for f in result["folds"]] == ["dev", "test1", "test2"]
    for fold in ("dev", "test1", "test2"):
        assert set(result["systems"]["model"]["per_fold"][fold]["va"]["annotated"]) == set(VAD)
