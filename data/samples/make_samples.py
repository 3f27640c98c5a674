"""Synthesise the bundled sample clips (data/samples/) with espeak-ng and sox.

The clips are made by the project, not copied from any corpus: four synthetic speakers
(espeak-ng voice variants) read short English sentences in four acted "emotions", each
rendered with its own prosody (pitch, pitch range via speed, loudness). They exist so the
quickstart and the tests can run the whole pipeline offline; a model trained on them says
nothing about real emotional speech.

Run from the repository root (needs `apt-get install espeak-ng sox`):

    python data/samples/make_samples.py

It rewrites data/samples/wav/*.wav and data/samples/manifest.jsonl deterministically.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# speaker id -> (espeak-ng voice, gender, pitch offset, speed factor, split)
SPEAKERS = {
    "spk1": ("en-us+m3", "m", 0, 1.00, "train"),
    "spk2": ("en-us+f2", "f", 4, 1.05, "train"),
    "spk3": ("en-gb+m4", "m", -4, 0.95, "train"),
    "spk4": ("en-us+f4", "f", 2, 1.00, "test"),
}

# emotion -> espeak pitch (0-99), speed (words/min), amplitude (0-200), designed valence, arousal
PROSODY = {
    "neutral": (45, 160, 90, 0.0, -0.1),
    "happy": (72, 190, 120, 0.7, 0.5),
    "angry": (62, 205, 165, -0.6, 0.8),
    "sad": (28, 115, 55, -0.6, -0.6),
}

# emotion -> sentences, each with the words that carry the emotion (empty: none do)
SENTENCES = {
    "neutral": [("The meeting is on Tuesday.", []), ("Please put the book on the table.", []),
                ("The train leaves at nine.", [])],
    "happy": [("This is the best day of my life.", ["best day"]), ("We won the big game today!", ["won"]),
              ("The train leaves at nine.", [])],
    "angry": [("Get out of my room right now!", ["get out"]), ("I told you to stop doing that!", ["stop"]),
              ("The train leaves at nine.", [])],
    "sad": [("I miss her so much.", ["miss"]), ("Nobody came to the party.", ["nobody came"]),
            ("The train leaves at nine.", [])],
}

CUES = {
    "neutral": "even pitch, moderate loudness and a steady pace",
    "happy": "raised pitch, a lively pace and a bright voice",
    "angry": "loud, raised pitch and fast speech",
    "sad": "quiet, low pitch and slow speech",
}


def rationale(emotion: str, words: list[str]) -> str:
    """The designed rationale of a clip, in the form the model is trained on."""
    text = f"{emotion}: {CUES[emotion]}"
    if words:
        text += ", and the words " + " and ".join(f"'{w}'" for w in words)
    return text


def synthesize(text: str, voice: str, pitch: int, speed: int, amplitude: int, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-a", str(amplitude),
                        "-w", str(raw), text], check=True)
        # 16 kHz mono 16-bit, 50 ms of silence trimmed-in at both ends.
        subprocess.run(["sox", "-G", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out),
                        "pad", "0.05", "0.05"], check=True)


def main() -> None:
    rng = np.random.default_rng(0)
    (HERE / "wav").mkdir(exist_ok=True)
    rows = []
    for spk, (voice, gender, p_off, s_fac, split) in SPEAKERS.items():
        for emotion, (pitch, speed, amp, val, aro) in PROSODY.items():
            for n, (text, words) in enumerate(SENTENCES[emotion]):
                jitter = rng.uniform(-1, 1, size=3)
                p = int(np.clip(pitch + p_off + 4 * jitter[0], 0, 99))
                s = int(speed * s_fac * (1 + 0.05 * jitter[1]))
                a = int(np.clip(amp * (1 + 0.1 * jitter[2]), 10, 180))
                utt = f"{spk}_{emotion}_{n}"
                synthesize(text, voice, p, s, a, HERE / "wav" / f"{utt}.wav")
                rows.append({
                    "id": utt, "audio": f"wav/{utt}.wav", "start": None, "end": None,
                    "dataset": "samples", "speaker": spk, "gender": gender, "transcript": text,
                    "emotion": emotion, "emotion_votes": None,
                    "valence": round(float(np.clip(val + 0.05 * jitter[0], -1, 1)), 3),
                    "arousal": round(float(np.clip(aro + 0.1 * jitter[2], -1, 1)), 3),
                    "dominance": None, "va_source": "annotated", "split": split, "evidence": None,
                    "rationale": {"text": rationale(emotion, words), "writer": "design", "verdict": None},
                })
    with (HERE / "manifest.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} clips to {HERE / 'wav'} and {HERE / 'manifest.jsonl'}")


if __name__ == "__main__":
    main()
