"""`prepare hf` (corpora as Hugging Face datasets) and `export --to hf` (a manifest as one)."""

import io
import json
import shutil

import datasets
import numpy as np
import pytest
import soundfile as sf

from reasoning.audio import SAMPLE_RATE, load_audio
from reasoning.cli import main
from reasoning.errors import UserError
from reasoning.manifest import read_manifest, write_manifest
from reasoning.prepare import prepare
from reasoning.prepare.hf import JSON_ID, SCALE_ID, export_manifest

from conftest import SAMPLES


@pytest.fixture(autouse=True)
def _own_datasets_cache(tmp_path, monkeypatch):
    """load_dataset converts parquet into a cache: keep it out of the user's one."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def wave(seconds=0.4, sr=22050, freq=220.0, amplitude=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("float32"), sr


def wav_bytes(seconds=0.4, sr=22050, freq=220.0):
    buf = io.BytesIO()
    sf.write(buf, *wave(seconds, sr, freq), format="WAV")
    return buf.getvalue()


def audio_dataset(columns: dict, audio: list, features: dict):
    """A dataset whose `audio` column is an Audio feature, built without torchcodec: the
    {bytes, path} struct first, then cast (as reasoning.prepare.hf does)."""
    feats = {"audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}, **features}
    ds = datasets.Dataset.from_dict({"audio": audio, **columns}, features=datasets.Features(feats))
    return ds.cast_column("audio", datasets.Audio())


def labelled(n_offset=0, speakers=("s1", "s1", "s2", "s2"), audio=None):
    """Four clips with their audio as bytes: two speakers, ClassLabel emotions, text."""
    names = ["ang", "hap", "neu"]
    audio = audio or [{"bytes": wav_bytes(0.3 + 0.1 * i, freq=150 + 40 * i),
                       "path": f"clip{i + n_offset}.wav"} for i in range(4)]
    columns = {"emotion": [0, 1, 2, 0], "speaker_id": list(speakers),
               "text": ["go away", "hello", "fine", "stop"], "gender": ["female", "female", "male", "male"]}
    features = {"emotion": datasets.ClassLabel(names=names), "speaker_id": datasets.Value("string"),
                "text": datasets.Value("string"), "gender": datasets.Value("string")}
    return audio_dataset(columns, audio, features)


def test_saved_dataset_dict_with_audio_bytes(tmp_path):
    train = labelled(0)
    # in the test split: a clip whose bytes are no audio, and a row without audio at all
    test = labelled(4, speakers=("t0", "t1", "t2", "t3"), audio=[
        {"bytes": wav_bytes(0.3, freq=150), "path": "clip4.wav"},
        {"bytes": wav_bytes(0.4, freq=190), "path": "clip5.wav"},
        {"bytes": b"RIFF0000WAVEjunk", "path": "clip6.wav"}, None])
    source = tmp_path / "saved"
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(source))

    out = tmp_path / "out"
    result = prepare("hf", source, out, labels=["ang", "hap", "neu"])
    rows = {r["id"]: r for r in read_manifest(result.manifest)}
    assert sorted(rows) == ["clip0", "clip1", "clip2", "clip3", "clip4", "clip5"]
    assert {k: r["emotion"] for k, r in rows.items()} == {
        "clip0": "ang", "clip1": "hap", "clip2": "neu", "clip3": "ang", "clip4": "ang", "clip5": "hap"}
    assert {k: r["split"] for k, r in rows.items()} == {f"clip{i}": "train" if i < 4 else "test"
                                                         for i in range(6)}
    assert rows["clip0"]["speaker"] == "s1" and rows["clip5"]["speaker"] == "t1"
    assert rows["clip2"]["gender"] == "m" and rows["clip1"]["transcript"] == "hello"
    # the bytes were written once beside the manifest, as the clip they are
    clip = out / "audio" / "clip3.wav"
    assert rows["clip3"]["audio"] == str(clip.resolve())
    assert clip.read_bytes() == wav_bytes(0.6, freq=270)
    assert rows["clip3"]["duration"] == pytest.approx(0.6, abs=1e-3)
    dropped = {d["id"]: d for d in result.card["dropped"]}
    assert set(dropped) == {"clip6", "test-3"}      # no path to name it after: split and row
    assert "clip6.wav: not a readable audio file" in dropped["clip6"]["reason"]
    assert "neither bytes nor a path" in dropped["test-3"]["reason"]
    assert dropped["test-3"]["where"].endswith("[test]:3")
    counts = result.card["counts"]["label_by_split"]
    assert counts == {"train": {"ang": 2, "hap": 1, "neu": 1}, "test": {"ang": 1, "hap": 1}}
    assert result.card["split"]["strategy"] == "official" and result.card["split"]["speaker_disjoint"]
    assert result.card["va"]["source"] == "derived"      # no VA columns: derived from the acoustics
    assert "7 stored in the dataset and written to audio/ (7 written now" in result.card["audio"]

    # idempotent: nothing redone, no clip rewritten
    stamp = clip.stat().st_mtime_ns
    again = prepare("hf", source, out, labels=["ang", "hap", "neu"])
    assert again.skipped and clip.stat().st_mtime_ns == stamp
    forced = prepare("hf", source, out, labels=["ang", "hap", "neu"], force=True)
    assert not forced.skipped and clip.stat().st_mtime_ns == stamp
    assert "0 written now, 7 unchanged" in forced.card["audio"]


def test_parquet_with_paths_is_read_in_place(tmp_path, monkeypatch):
    clips = tmp_path / "corpus" / "clips"
    clips.mkdir(parents=True)
    for name in ("u0", "u1", "u2", "gone"):
        sf.write(clips / f"{name}.wav", *wave(0.3, 16000, 200 + 30 * len(name)))
    audio = [{"bytes": None, "path": "clips/u0.wav"}, {"bytes": None, "path": str(clips / "u1.wav")},
             {"bytes": None, "path": "clips/u2.wav"}, {"bytes": None, "path": "clips/gone.wav"}]
    columns = {"label": ["angry", "happy", "bored", "angry"], "spk": ["a", "b", "c", "c"],
               "valence": [1.0, 5.0, 3.0, 2.0], "utt": ["x0", "x1", "x2", "x3"],
               "arousal": [5.0, 4.0, 1.0, 2.0]}
    features = {"label": datasets.Value("string"), "spk": datasets.Value("string"),
                "valence": datasets.Value("float32"), "utt": datasets.Value("string"),
                "arousal": datasets.Value("float32")}
    parquet = tmp_path / "corpus" / "data.parquet"
    with monkeypatch.context() as m:   # datasets reads the clips' sizes, relative to here
        m.chdir(tmp_path / "corpus")
        audio_dataset(columns, audio, features).to_parquet(str(parquet))
    (clips / "gone.wav").unlink()     # a clip deleted since

    out = tmp_path / "out"
    code = main(["prepare", "hf", "--dataset", str(parquet), "--out", str(out), "--id-column", "utt",
                 "--speaker-column", "spk", "--label-map", "angry=anger,happy=happiness",
                 "--split", "random"])
    assert code == 0
    card = json.loads((out / "card.json").read_text())
    rows = {r["id"]: r for r in read_manifest(out / "manifest.jsonl")}
    assert sorted(rows) == ["x0", "x1", "x2"]
    assert rows["x0"]["audio"] == str(clips / "u0.wav") and rows["x1"]["audio"] == str(clips / "u1.wav")
    assert not (out / "audio").exists()
    assert {k: r["emotion"] for k, r in rows.items()} == {"x0": "anger", "x1": "happiness", "x2": "bored"}
    # labels outside the label map are kept under their own names, and the card says so
    assert any("not in --label-map" in p and "bored (1 rows)" in p for p in card["problems"])
    assert rows["x0"]["valence"] == -1.0 and rows["x1"]["valence"] == 1.0 and rows["x2"]["arousal"] == -1.0
    assert all(r["va_source"] == "annotated" for r in rows.values())
    assert card["va"]["source"] == "annotated" and "mapped linearly from 1..5" in card["va"]["description"]
    assert [d["id"] for d in card["dropped"]] == ["x3"]
    assert "audio file not found" in card["dropped"][0]["reason"]
    assert "--dataset" in card["command"] and "--id-col utt" in card["command"]


def test_array_audio_is_written_as_float_wav(tmp_path):
    samples, _ = wave(0.25, 8000, 300)
    ds = datasets.Dataset.from_dict({"audio": [{"array": samples.tolist(), "sampling_rate": 8000}],
                                     "speaker": ["p"], "emotion": ["calm"]})
    ds.save_to_disk(str(tmp_path / "arr"))
    result = prepare("hf", tmp_path / "arr", tmp_path / "out", split="random")
    (row,) = read_manifest(result.manifest)
    back, sr = sf.read(row["audio"], dtype="float32")
    assert sr == 8000 and np.array_equal(back, samples)
    assert row["id"] == "row-0" and row["emotion"] == "calm"


def test_columns_that_are_not_there_are_listed(tmp_path):
    labelled().save_to_disk(str(tmp_path / "d"))
    with pytest.raises(UserError, match=r"no column 'mood' .*the columns are audio \(Audio\), "
                                        r"emotion \(ClassLabel\), speaker_id .*Fix --label-column"):
        prepare("hf", tmp_path / "d", tmp_path / "out", columns={"label": "mood"})
    no_audio = datasets.Dataset.from_dict({"emotion": ["a"], "spk": ["x"]})
    no_audio.save_to_disk(str(tmp_path / "n"))
    with pytest.raises(UserError, match=r"no audio column .*the columns are emotion \(Value\), "
                                        r"spk \(Value\)\. Name it with --audio-column"):
        prepare("hf", tmp_path / "n", tmp_path / "out")
    with pytest.raises(UserError, match=r"column 'emotion' holds no audio .*Fix --audio-column"):
        prepare("hf", tmp_path / "d", tmp_path / "out", columns={"audio": "emotion"})
    # offline, a hub id that is not cached says what to do instead
    with pytest.raises(UserError, match=r"hub id .*save_to_disk\(DIR\)"):
        prepare("hf", "someone/not-cached-emotion", tmp_path / "out")


def _rich_manifest(tmp_path):
    """Twelve bundled clips (copied) as a manifest with everything a prepared one may hold."""
    rows = [json.loads(x) for x in SAMPLES.read_text().splitlines()][:12]
    (tmp_path / "clips").mkdir()
    for i, r in enumerate(rows):
        r["audio"] = str(shutil.copy(SAMPLES.parent / r["audio"], tmp_path / "clips"))
        r["duration"] = round(load_audio(r["audio"]).size / SAMPLE_RATE, 4)
        r["split"] = "train" if r["speaker"] == "spk1" else "test"
        r["dominance"] = round(-0.5 + 0.1 * i, 4) if i % 3 else None
        r["emotion_votes"] = {r["emotion"]: 3, "neutral": 1} if i % 2 else None
        r["va_source"] = "annotated" if i < 6 else "derived"
        r["evidence"] = {"pitch_mean": {"value": 180.5 + i, "z": -0.25 * i}, "words": ["get", "out"]}
        r["rationale"] = ({"text": f"{r['emotion']}: loud voice.", "writer": "template",
                           "verdict": "pass", "claims": [{"cue": "loudness"}]} if i != 4 else None)
        r["text_code"] = f"a0{i}"
        r["sentiment_score"] = i if i != 5 else 2.5
    path = tmp_path / "prepared" / "manifest.jsonl"
    write_manifest(rows, path)
    return path


def test_export_round_trip_gives_the_same_rows(tmp_path):
    manifest = _rich_manifest(tmp_path)
    ds = export_manifest(manifest, tmp_path / "exported")
    assert isinstance(ds.features["audio"], datasets.Audio)
    assert ds.features["evidence"].id == JSON_ID and ds.features["dominance"].id == SCALE_ID
    assert ds.features["text_code"].dtype == "string" and ds.features["sentiment_score"].dtype == "float64"
    stored = ds.cast_column("audio", datasets.Audio(decode=False))[0]["audio"]
    with open(read_manifest(manifest)[0]["audio"], "rb") as f:
        assert stored["bytes"] == f.read()

    # the clips travel inside the dataset: with the originals gone it still prepares
    shutil.rmtree(tmp_path / "clips")
    result = prepare("hf", tmp_path / "exported", tmp_path / "back")
    before = {r["id"]: r for r in read_manifest(manifest, resolve_audio=False)}
    after = {r["id"]: r for r in read_manifest(result.manifest, resolve_audio=False)}
    assert list(before) == list(after)
    for key, row in before.items():
        got = dict(after[key])
        assert got.pop("audio") == f"audio/{key}.wav"
        assert got == {k: v for k, v in row.items() if k != "audio"}, key
    assert result.card["split"]["speaker_disjoint"]
    assert "on -1..1 already" in result.card["va"]["description"]


def test_export_cli_and_an_offline_push(tmp_path, capsys):
    manifest = _rich_manifest(tmp_path)
    code = main(["export", "--manifest", str(manifest), "--to", "hf", str(tmp_path / "ds"),
                 "--push-to-hub", "someone/emotion-copy"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--push-to-hub someone/emotion-copy: the push failed" in err and "offline" in err.lower()
    assert "The dataset is saved at" in err
    assert len(datasets.load_from_disk(str(tmp_path / "ds"))) == 12
    # one `export` command, two modes: flags of the other mode are refused with the usage
    assert main(["export", "--manifest", str(manifest), str(tmp_path / "ds3")]) == 2
    assert "emoreason export --manifest M --to hf OUT" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path), "--to", "hf", str(tmp_path / "ds3")]) == 2
    assert "--to hf OUT is for --manifest" in capsys.readouterr().err
    assert not (tmp_path / "ds3").exists()
    # a manifest whose clip is gone is not exported
    rows = read_manifest(manifest)
    rows[0]["audio"] = str(tmp_path / "missing.wav")
    write_manifest(rows, tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match=r"1 of 12 rows have no audio file \(first: spk1_neutral_0"):
        export_manifest(tmp_path / "bad.jsonl", tmp_path / "ds2")


def test_cli_names_the_input_each_preparer_needs(tmp_path, capsys):
    assert main(["prepare", "hf", "--out", str(tmp_path / "o")]) == 2
    assert "prepare hf needs --dataset ID_OR_PATH" in capsys.readouterr().err
    assert main(["prepare", "emodb", "--dataset", "x", "--out", str(tmp_path / "o")]) == 2
    assert "--dataset is for `prepare hf`; for emodb pass --root DIR" in capsys.readouterr().err
    assert main(["prepare", "emodb", "--out", str(tmp_path / "o")]) == 2
    assert "prepare emodb needs --root DIR" in capsys.readouterr().err
    (tmp_path / "t.csv").write_text("audio,emotion\n")
    assert main(["prepare", "hf", "--dataset", str(tmp_path / "t.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "a file must be .parquet; for a CSV or JSONL table use `emoreason prepare generic" in \
        capsys.readouterr().err


def test_a_dataset_whose_label_column_is_not_found_says_so(tmp_path, caplog):
    """Columns named otherwise (here `emo`) gave 278 unlabelled EmoDB rows with no word of
    why: the run warns and names --label-column and the unmapped columns."""
    ds = audio_dataset({"emo": ["anger", "sadness"], "spk": ["03", "08"]},
                       [{"bytes": wav_bytes(), "path": f"c{i}.wav"} for i in range(2)],
                       {"emo": datasets.Value("string"), "spk": datasets.Value("string")})
    ds.save_to_disk(str(tmp_path / "d"))
    with caplog.at_level("WARNING", logger="reasoning.prepare.hf"):
        result = prepare("hf", tmp_path / "d", tmp_path / "out", split="random")
    assert [r["emotion"] for r in read_manifest(result.manifest)] == [None, None]
    assert any("no label column" in m and "--label-column" in m and "emo" in m for m in caplog.messages), caplog.messages
