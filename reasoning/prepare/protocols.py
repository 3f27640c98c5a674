"""The protocols, in one registry: which labels a task uses, which labels are merged, and
how evaluation splits the rows into folds (:mod:`reasoning.evaluation.folds`).

The manifest keeps every utterance; a protocol never deletes rows. Preparation applies the
protocol's ``merge`` (IEMOCAP 4-class: ``excited`` -> ``happy``) so ``emotion`` holds the
protocol's label, and rows whose label is outside ``labels`` keep their own name
(``frustrated``, ``xxx``). :func:`apply_protocol` is the one filter that excludes them, and
the dataset card lists every row it excludes. A recipe's ``data.labels`` is ``labels``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reasoning.errors import UserError

OTHER = "other"


@dataclass(frozen=True)
class Protocol:
    """A named label set, the merges that lead to it, what it is for, and (for evaluation)
    the label column and the fold scheme: ``sessions``, ``speakers``, ``official`` or
    ``test-sets`` (None: a preparation protocol only)."""

    name: str
    dataset: str
    labels: tuple[str, ...]          # () = every label the corpus has
    description: str
    merge: dict = field(default_factory=dict)   # canonical label -> protocol label
    folds: str | None = None
    label_key: str = "emotion"

    @property
    def speaker_independent(self) -> bool:
        return self.folds in ("sessions", "speakers", "test-sets")

    @property
    def one_training_set(self) -> bool:
        """Every fold trains on the same rows (``split == "train"``), so one model serves all."""
        return self.folds in ("official", "test-sets")

    @property
    def separate_folds(self) -> bool:
        """Folds are different test sets, reported one by one (pooling them means nothing)."""
        return self.folds == "test-sets"


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("iemocap4", "iemocap", ("neutral", "happy", "angry", "sad"),
             "IEMOCAP 4-class: neutral, happy (= hap + exc), angry, sad, leave-one-session-out "
             "(5 folds). Every other consensus label (fru, sur, fea, dis, oth, xxx) stays in "
             "the manifest under its own name and is excluded by this protocol.",
             merge={"excited": "happy"}, folds="sessions"),
    Protocol("iemocap_full", "iemocap",
             ("neutral", "happy", "excited", "sad", "angry", "frustrated", "surprised",
              "fearful", "disgusted", "other"),
             "IEMOCAP full label set: the ten consensus labels; xxx (no majority among the "
             "annotators) is excluded."),
    Protocol("meld7", "meld", ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"),
             "MELD 7 emotions, official train/dev/test split (test reported).", folds="official"),
    Protocol("meld-sentiment", "meld", ("neutral", "positive", "negative"),
             "MELD 3 sentiments, official train/dev/test split (test reported).",
             folds="official", label_key="sentiment"),
    Protocol("emodb7", "emodb",
             ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"),
             "EmoDB 7-class emotion."),
    Protocol("msp-podcast", "msp-podcast",
             ("anger", "sadness", "happiness", "surprise", "fear", "disgust", "contempt", "neutral"),
             "MSP-Podcast 8 classes (EmoClass A S H U F D C N). 'other' (O) and 'no_agreement' "
             "(X) stay in the manifest under their own names and are excluded by this "
             "protocol; with --keep-other both become 'other' and are kept for training, never "
             "scored. Trained on Train; Development and each test set (Test1, Test2, ...) "
             "reported separately, CCC of valence, arousal and dominance.", folds="test-sets"),
    Protocol("loso", "*", (), "Every emotion label of the manifest, leave-one-speaker-out.",
             folds="speakers"),
    Protocol("all", "*", (), "Every label found in the corpus."),
)}

DEFAULT_PROTOCOL = {"iemocap": "iemocap4", "meld": "meld7", "emodb": "emodb7",
                    "msp-podcast": "msp-podcast"}


# Names users typed before the two registries became one: `emoreason eval --protocol
# iemocap4-loso` and `eval.protocol: iemocap4-loso` keep working.
ALIASES = {"iemocap4-loso": "iemocap4"}


def protocol_names(evaluation: bool) -> list[str]:
    """The names ``--protocol`` accepts: for evaluation (a fold scheme) or for preparation
    (an emotion label set), aliases included."""
    names = [n for n, p in PROTOCOLS.items()
             if (p.folds is not None if evaluation else p.label_key == "emotion")]
    return names + [a for a, n in ALIASES.items() if n in names]


def get_protocol(name: str, dataset: str | None = None) -> Protocol:
    """The protocol ``name`` (or its alias): for preparing ``dataset``, or for evaluation
    when ``dataset`` is None; raises UserError naming the choices."""
    protocol = PROTOCOLS.get(ALIASES.get(name, name))
    if dataset is None:
        if protocol is None or protocol.folds is None:
            raise UserError(f"unknown protocol {name!r} for evaluation; choose one of "
                            f"{', '.join(protocol_names(evaluation=True))}.")
        return protocol
    fits = [p for p, v in PROTOCOLS.items() if v.dataset in (dataset, "*") and v.label_key == "emotion"]
    if protocol is None or protocol.name not in fits:
        raise UserError(f"--protocol {name}: not a protocol for {dataset}; choose one of "
                        f"{', '.join(fits)}.")
    return protocol


def apply_protocol(rows: list[dict], labels: list[str] | tuple[str, ...],
                   keep_other: bool = False) -> tuple[list[dict], list[tuple[dict, str]]]:
    """Split rows into (kept, [(row, reason), ...]) by whether ``emotion`` is in ``labels``.

    With ``keep_other`` a row outside the label set is kept with ``emotion = "other"``
    (its own label moves to ``emotion_orig``), so "other / no agreement" can be a class.
    Rows without a label are always excluded. An empty ``labels`` keeps every labelled row.
    """
    allowed = set(labels)
    kept, excluded = [], []
    for row in rows:
        emotion = row.get("emotion")
        if emotion is None:
            excluded.append((row, "no emotion label"))
        elif not allowed or emotion in allowed:
            kept.append(row)
        elif keep_other:
            kept.append({**row, "emotion": OTHER, "emotion_orig": emotion})
        else:
            excluded.append((row, f"label {emotion!r} is not in the protocol's label set"))
    return kept, excluded
