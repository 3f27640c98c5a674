"""EmoDB (file-name labels) and the generic loader (label folders, CSV/JSONL tables)."""

import json
import re
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from reasoning.cli import main
from reasoning.errors import UserError
from reasoning.manifest import read_manifest
from reasoning.prepare import prepare


def tone(path, amplitude=0.3, seconds=0.3, sr=22050, freq=220.0):
    """A harmonic-rich (sawtooth-like) tone, so its spectrum is not quantisation noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(np.sin(2 * np.pi * k * freq * t) / k for k in range(1, 16))
    sf.write(path, (amplitude * wave / np.abs(wave).max()).astype("float32"), sr)


_PREPARED = {}


@pytest.fixture
def real_emodb(shared_data, tmp_path_factory):
    """The shared EmoDB folder, prepared once for the tests below."""
    root = shared_data / "emodb"
    if not (root / "wav").is_dir():
        pytest.skip("../shared/data/emodb is not present")
    if "emodb" not in _PREPARED:
        result = prepare("emodb", root, tmp_path_factory.mktemp("emodb"))
        _PREPARED["emodb"] = result, read_manifest(result.manifest)
    return _PREPARED["emodb"]


def test_real_emodb_labels_speakers_and_transcripts(real_emodb):
    result, rows = real_emodb
    assert len(rows) == 278
    speakers = Counter(r["speaker"] for r in rows)
    assert speakers == {"03": 49, "08": 58, "09": 43, "10": 38, "11": 55, "12": 35}
    letters = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
               "T": "sadness", "N": "neutral"}
    assert all(r["emotion"] == letters[r["id"][5]] for r in rows)
    assert all(r["gender"] == {"03": "m", "08": "f", "09": "f", "10": "m", "11": "m",
                               "12": "m"}[r["speaker"]] for r in rows)
    row = next(r for r in rows if r["id"] == "03a01Fa")
    assert row["transcript"] == "Der Lappen liegt auf dem Eisschrank."
    assert row["transcript_en"] == "The cloth is lying on the fridge."
    # PROVENANCE.md's table: speaker 08 has no disgust clip.
    assert not [r for r in rows if r["speaker"] == "08" and r["emotion"] == "disgust"]
    assert Counter(r["emotion"] for r in rows if r["speaker"] == "03") == {
        "anger": 14, "boredom": 5, "disgust": 1, "fear": 4, "happiness": 7, "sadness": 7,
        "neutral": 11}
    # Default split: leave-one-speaker-out, checked disjoint; derived VA on every clip.
    assert {r["split"] for r in rows} == {f"speaker-{s}" for s in speakers}
    assert result.card["split"]["speaker_disjoint"]
    assert all(r["va_source"] == "derived" and -1 <= r["valence"] <= 1 and -1 <= r["arousal"] <= 1
               for r in rows)
    assert all(r["duration"] == 2.0 for r in rows)


def test_real_emodb_derived_va_follows_the_labels(real_emodb):
    _, rows = real_emodb
    mean = lambda label, key: np.mean([r[key] for r in rows if r["emotion"] == label])  # noqa: E731
    assert mean("happiness", "valence") > mean("neutral", "valence") > mean("sadness", "valence")
    assert mean("anger", "arousal") > mean("sadness", "arousal")
    assert mean("anger", "arousal") > mean("boredom", "arousal")


def test_emodb_bad_files_are_listed_not_fatal(tmp_path):
    root = tmp_path / "emodb"
    tone(root / "wav" / "03a01Wa.wav", 0.5)
    tone(root / "wav" / "08a02Tb.wav", 0.05)
    tone(root / "wav" / "17b01Nc.wav", 0.2)          # speaker not in the corpus's table
    tone(root / "wav" / "notes.wav")                  # not an EmoDB name
    tone(root / "wav" / "03a01Xa.wav")                # no such emotion letter
    (root / "wav" / "09a04Ab.wav").write_bytes(b"RIFF....WAVEjunk")   # corrupt
    tone(root / "wav" / "10a05Lc.wav", seconds=1.0)
    whole = (root / "wav" / "10a05Lc.wav").read_bytes()
    (root / "wav" / "10a05Lc.wav").write_bytes(whole[: len(whole) // 2])   # cut-off copy
    result = prepare("emodb", root, tmp_path / "out", split="speaker-random", seed=1)
    rows = {r["id"]: r for r in read_manifest(result.manifest)}
    assert sorted(rows) == ["03a01Wa", "08a02Tb", "17b01Nc"]
    assert rows["17b01Nc"]["gender"] is None and rows["08a02Tb"]["gender"] == "f"
    assert rows["03a01Wa"]["transcript"] is None       # no transcripts.csv here
    reasons = {d["id"]: d["reason"] for d in result.card["dropped"]}
    assert set(reasons) == {"notes", "03a01Xa", "09a04Ab", "10a05Lc"}
    assert "SSTTTEV" in reasons["notes"] and "'X'" in reasons["03a01Xa"]
    assert "09a04Ab.wav" in reasons["09a04Ab"]
    assert "10a05Lc.wav: truncated" in reasons["10a05Lc"]
    assert {d["where"] for d in result.card["dropped"]} >= {"wav/notes.wav", "wav/10a05Lc.wav"}
    assert any("17" in p and "speaker table" in p for p in result.card["problems"])
    assert {r["split"] for r in rows.values()} == {"train", "dev", "test"}   # one speaker each
    assert rows["03a01Wa"]["arousal"] > rows["08a02Tb"]["arousal"]


def test_folder_of_label_subfolders(tmp_path):
    root = tmp_path / "my corpus"
    tone(root / "happy" / "a.wav", 0.4)
    tone(root / "happy" / "b.flac", 0.3)
    tone(root / "sad" / "nested" / "c.wav", 0.05)
    tone(root / "loose.wav")
    # Folders name no speakers: a speaker-disjoint split is impossible, random must be asked for.
    with pytest.raises(UserError, match=r"3 of 3 rows have no speaker.*--split random"):
        prepare("generic", root, tmp_path / "out", labels=["happy", "sad"])
    result = prepare("generic", root, tmp_path / "out", labels=["happy", "sad"],
                     label_map={"sad": "sad"}, seed=3, split="random")
    rows = {r["id"]: r for r in read_manifest(result.manifest)}
    assert {k: r["emotion"] for k, r in rows.items()} == {"a": "happy", "b": "happy", "c": "sad"}
    assert all(r["dataset"] == "my_corpus" for r in rows.values())
    assert result.card["split"]["strategy"] == "random"
    assert "NOT speaker-disjoint" in result.card["split"]["description"]
    assert [d["id"] for d in result.card["dropped"]] == ["loose"]
    # Without reading audio, a clip added to a label folder still makes the output stale.
    args = dict(labels_only=True, labels=["happy", "sad"], split="random")
    prepare("generic", root, tmp_path / "out2", **args)
    assert prepare("generic", root, tmp_path / "out2", **args).skipped
    tone(root / "sad" / "d.wav")
    again = prepare("generic", root, tmp_path / "out2", **args)
    assert not again.skipped and again.card["rows"] == 4


def test_csv_with_mapped_columns(tmp_path):
    root = tmp_path / "corpus"
    for name, amp in (("s1_a", 0.5), ("s1_b", 0.1), ("s2_a", 0.3), ("s3_a", 0.2), ("s4_a", 0.2)):
        tone(root / "clips" / f"{name}.wav", amp)
    table = root / "meta.csv"
    table.write_text(
        "file,feeling,who,sex,text,val,aro,fold\n"
        "clips/s1_a.wav,hap,spk1,Female,hello there,4,5,A\n"
        "clips/s1_b.wav,exc,spk1,F,hi,3,2,A\n"
        "clips/s2_a.wav,ang,spk2,male,go away,1,5,B\n"
        f"{root / 'clips' / 's3_a.wav'},neu,spk3,x,okay,3,3,C\n"
        "clips/s4_a.wav,neu,spk4,m,,9,3,C\n"
        "clips/s1_a.wav,neu,spk1,f,dup,3,3,A\n"
        ",neu,spk5,f,no audio,3,3,C\n")
    args = dict(columns={"audio": "file", "label": "feeling", "speaker": "who", "gender": "sex",
                         "transcript": "text", "valence": "val", "arousal": "aro", "split": "fold"},
                label_map={"hap": "happy", "exc": "happy", "ang": "angry", "neu": "neutral"},
                labels=["happy", "angry"])
    result = prepare("generic", table, tmp_path / "out", **args)
    rows = {r["id"]: r for r in read_manifest(result.manifest)}
    assert sorted(rows) == ["clips/s1_a", "clips/s1_b", "clips/s2_a", "clips/s3_a"]
    a = rows["clips/s1_a"]
    assert (a["emotion"], a["speaker"], a["gender"], a["transcript"]) == ("happy", "spk1", "f", "hello there")
    assert (a["valence"], a["arousal"], a["va_source"], a["split"]) == (0.5, 1.0, "annotated", "A")
    assert rows["clips/s1_b"]["emotion"] == "happy"
    assert rows["clips/s3_a"]["gender"] is None
    reasons = [d["reason"] for d in result.card["dropped"]]
    assert any("valence 9.0 is outside --va-range 1,5" in r for r in reasons)
    assert any("duplicate id" in r for r in reasons) and any("empty audio" in r for r in reasons)
    assert result.card["protocol"]["rows_in"] == 3      # neutral is outside --labels
    assert result.card["split"]["strategy"] == "official" and result.card["split"]["speaker_disjoint"]

    with pytest.raises(UserError, match="no column 'speaker_name'.*--speaker-col"):
        prepare("generic", table, tmp_path / "out2", columns={"audio": "file", "speaker": "speaker_name"})


def test_jsonl_table_and_a_leaking_split_column(tmp_path):
    root = tmp_path / "corpus"
    tone(root / "x.wav")
    tone(root / "y.wav")
    lines = [{"audio": "x.wav", "emotion": "calm", "speaker": "p1", "split": "train"},
             {"audio": "y.wav", "emotion": "calm", "speaker": "p1", "split": "test"}]
    table = root / "data.jsonl"
    table.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    with pytest.raises(UserError, match="speaker 'p1' is on both sides"):
        prepare("generic", table, tmp_path / "out")
    result = prepare("generic", table, tmp_path / "out", split="loso")
    assert result.card["rows"] == 2
    assert result.card["dropped"][0]["reason"].startswith("not valid JSON")


def test_cli_prepares_and_reports_errors(tmp_path, capsys):
    root = tmp_path / "corpus"
    tone(root / "happy" / "a.wav")
    tone(root / "sad" / "b.wav")
    out = tmp_path / "out"
    prep = ["prepare", "generic", "--root", str(root), "--out", str(out), "--split", "random"]
    assert main(prep + ["--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert f"{out / 'manifest.jsonl'}: 2 rows (written)" in text and "card:" in text
    assert (out / "card.md").is_file() and (out / "card.json").is_file()
    assert main(prep) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(prep[:-2]) == 2              # no speakers, and random not asked for
    assert "no speaker" in capsys.readouterr().err
    assert main(["prepare", "emodb", "--root", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["prepare", "meld", "--root", str(root), "--out", str(out), "--labels-only"]) == 2
    assert "train_sent_emo.csv" in capsys.readouterr().err
    assert main(prep + ["--label-map", "oops"]) == 2
    assert "SRC=DST" in capsys.readouterr().err

    # Constants of the derived-VA formula from a file; unknown fields are refused.
    config = tmp_path / "va.yaml"
    config.write_text("valence_prior_weight: 1.0\nmin_spread: {zcr: 0.01}\n")
    assert main(prep + ["--va-config", str(config)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["va"]["config"]["valence_prior_weight"] == 1.0
    assert card["va"]["config"]["min_spread"]["zcr"] == 0.01
    rows = {r["id"]: r for r in read_manifest(out / "manifest.jsonl")}
    assert (rows["a"]["valence"], rows["b"]["valence"]) == (0.7, -0.6)   # the priors alone
    config.write_text("valence_weight: 1.0\n")
    assert main(prep + ["--va-config", str(config)]) == 2
    assert "unknown field(s) ['valence_weight']" in capsys.readouterr().err


def small_emodb(root, speakers=("03", "08"), codes=("a01", "a02"), letters="WTNF"):
    """An EmoDB folder in the release's layout: 2 x 2 x 4 = 16 clips and transcripts.csv."""
    for s in speakers:
        for c in codes:
            for i, letter in enumerate(letters):
                tone(root / "wav" / f"{s}{c}{letter}a.wav", 0.1 + 0.1 * i, seconds=0.5,
                     freq=120.0 + 40 * i)
    (root / "transcripts.csv").write_text(
        "text_code,transcript,english\n"
        "a01,Der Lappen liegt auf dem Eisschrank.,The cloth is lying on the fridge.\n"
        "a02,Das will sie am Mittwoch abgeben.,She wants to hand it in on Wednesday.\n")
    return root


def test_rerun_keeps_evidence_and_rationales_of_unchanged_rows(tmp_path, caplog, capsys):
    """The README's workflow (prepare, evidence, rationales in place), then prepare again
    after one clip and one sentence changed: only the rows they touch lose their work."""
    root, out = small_emodb(tmp_path / "emodb"), tmp_path / "out"
    manifest = out / "manifest.jsonl"
    prep = ["prepare", "emodb", "--root", str(root), "--out", str(out), "--workers", "1"]
    assert main(prep) == 0
    assert main(["evidence", "--manifest", str(manifest)]) == 0
    assert main(["rationales", "--manifest", str(manifest), "--writer", "template"]) == 0
    before = {r["id"]: r for r in read_manifest(manifest, resolve_audio=False)}
    assert len(before) == 16 and all(r["evidence"] and r["rationale"] for r in before.values())

    tone(root / "wav" / "08a02Ta.wav", 0.6, seconds=0.7)          # a clip re-recorded
    caplog.clear()
    assert main(prep) == 0
    after = {r["id"]: r for r in read_manifest(manifest, resolve_audio=False)}
    assert after["08a02Ta"]["evidence"] is None and after["08a02Ta"]["rationale"] is None
    for key in set(before) - {"08a02Ta"}:
        assert (after[key]["evidence"], after[key]["rationale"]) == (
            before[key]["evidence"], before[key]["rationale"])
    assert ("kept evidence and rationales of 15 rows; dropped them for 1 changed row: "
            "08a02Ta") in caplog.text
    capsys.readouterr()
    assert main(["evidence", "--manifest", str(manifest)]) == 0      # only the new clip
    assert "measured 1, cached 15" in capsys.readouterr().out
    before = {r["id"]: r for r in read_manifest(manifest, resolve_audio=False)}

    # A sentence corrected in transcripts.csv changes its 8 rows; --force keeps the rest.
    text = (root / "transcripts.csv").read_text()
    (root / "transcripts.csv").write_text(text.replace("am Mittwoch", "am Dienstag"))
    caplog.clear()
    assert main(prep + ["--force"]) == 0
    again = {r["id"]: r for r in read_manifest(manifest, resolve_audio=False)}
    assert all(again[k]["evidence"] is None for k in again if k[2:5] == "a02")
    assert all((again[k]["evidence"], again[k]["rationale"]) == (
        before[k]["evidence"], before[k]["rationale"]) for k in again if k[2:5] == "a01")
    assert "kept evidence and rationales of 8 rows; dropped them for 8 changed rows:" in caplog.text
    assert "03a02Fa" in caplog.text

    # A manifest prepare cannot read is not written over (its evidence would be lost).
    with manifest.open("a") as f:
        f.write("{not json\n")
    with pytest.raises(UserError, match=r"manifest.jsonl:17: not valid JSON.*move it away"):
        prepare("emodb", root, out, force=True)


def test_a_speakerless_row_stops_the_default_split_instead_of_leaking(tmp_path):
    root = tmp_path / "corpus"
    for i in range(6):
        tone(root / f"c{i}.wav")
    table = root / "meta.csv"
    table.write_text("audio,emotion,speaker\n" + "".join(f"c{i}.wav,happy,s{i % 3}\n"
                                                         for i in range(6)) + "c6.wav,sad,\n")
    # c6.wav is missing, so its row is dropped by the audio stage: the split is unaffected.
    result = prepare("generic", table, tmp_path / "out")
    assert [d["id"] for d in result.card["dropped"]] == ["c6"]
    assert result.card["split"]["strategy"] == "speaker-random"
    assert result.card["split"]["speaker_disjoint"]
    # Once c6 is there, its row would leak: the default stops and says how to go on.
    tone(root / "c6.wav")
    with pytest.raises(UserError, match=r"1 of 7 rows have no speaker \(first: c6 \(.*meta.csv:8\)"
                                        r"\).*--speaker-col.*--split random"):
        prepare("generic", table, tmp_path / "out")
    result = prepare("generic", table, tmp_path / "out", split="random")
    assert not result.card["split"]["speaker_disjoint"]
    assert "NOT speaker-disjoint" in result.card["split"]["description"]


def test_emodb_transcripts_with_a_short_line_is_a_clear_error(tmp_path):
    root = small_emodb(tmp_path / "emodb")
    (root / "transcripts.csv").write_text("text_code,transcript,english\n"
                                          "a01,Der Lappen liegt auf dem Eisschrank.,The cloth.\n"
                                          "a02\n")
    with pytest.raises(UserError, match=r"emodb/transcripts.csv:3: 1 field where the header has 3 "
                                        r"\(text_code, transcript, english\).*quote"):
        prepare("emodb", root, tmp_path / "out", labels_only=True)


QUOTE = "Close or remove the quote"


@pytest.mark.parametrize("body, what, fix", [
    ("a.wav,happy,s1,extra\n", "4 fields where the header has 3", "one field per column"),
    ("a.wav,happy\n", "2 fields where the header has 3", "one field per column"),
    # An unbalanced quote: the path swallows the next row (csv accepts this quietly).
    ('"a.wav,happy,s1\nb.wav",sad,s2\n', "the 'audio' field runs over lines 3-4", QUOTE),
    ('"a.wav,happy,s1\n"b.wav",sad,s2\n', "in the row starting here is not closed", QUOTE),
    ('a.wav,happy,"s1\n', "in the row starting here is not closed", QUOTE),   # at the end
])
def test_csv_rows_with_the_wrong_fields_are_errors(tmp_path, body, what, fix):
    table = tmp_path / "meta.csv"
    table.write_text("audio,emotion,speaker\nz.wav,sad,s0\n" + body)
    with pytest.raises(UserError, match=rf"meta.csv:3: .*{re.escape(what)}.*{fix}"):
        prepare("generic", table, tmp_path / "out", labels_only=True, split="random")


def test_prepare_refuses_a_manifest_another_stage_is_changing(tmp_path, capsys):
    """prepare reads the old manifest's evidence and rationales and writes it anew: while
    `evidence` or `rationales` holds it, prepare would overwrite their work."""
    import os

    from reasoning.manifest import locked_manifest

    root, out = small_emodb(tmp_path / "emodb"), tmp_path / "out"
    prep = ["prepare", "emodb", "--root", str(root), "--out", str(out), "--workers", "1", "--force"]
    assert main(prep) == 0
    with locked_manifest(out / "manifest.jsonl", "evidence"):
        assert main(prep) == 2
    assert f"`emoreason evidence` (pid {os.getpid()}) is changing this manifest" in capsys.readouterr().err
    assert main(prep) == 0  # once the other stage is done
