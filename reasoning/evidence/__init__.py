"""The evidence stage: acoustic and lexical cues measured per utterance.

``emoreason evidence --manifest M`` (or :func:`measure_manifest`) writes each row's
``evidence`` field. Schema (every number a float or ``null``)::

    evidence = {
      "version":  "emoreason-evidence-1+opensmile-2.6.0+parselmouth-0.4.7",  # cache key
      "measured": {"audio": ..., "start": ..., "end": ...,    # what was measured (cache key):
                   "size": bytes, "mtime_ns": int},         # the file's content identity
      "values": {
        "duration_s":     clip length (s)
        "speech_s":       phonation time: first to last sounding frame, minus pauses (s)
        "voiced_s":       time with a pitch (s)
        "f0_mean_hz":     mean F0 (Hz)                      } Praat, autocorrelation,
        "f0_mean_st":     mean F0 (semitones re 27.5 Hz)    } 75-600 Hz; null when the
        "f0_range_st":    5th-95th percentile range (st)    } clip is unvoiced
        "f0_sd_st":       F0 variability, std (st)          }
        "loudness":       openSMILE eGeMAPS v02 loudness, mean over speech frames
        "syllable_rate":  syllable nuclei per second of speech (de Jong & Wempe 2009)
        "n_syllables":    syllable nuclei counted
        "word_rate":      transcript words per second of speech; null without transcript
        "pause_ratio":    pause time / (first to last sounding frame); pauses >= 0.25 s
        "n_pauses":       pauses counted
        "jitter_local":   Praat jitter (local), %
        "shimmer_local":  Praat shimmer (local), %
        "hnr_db":         Praat harmonics-to-noise ratio (cc), dB
        "spectral_slope": openSMILE slope 500-1500 Hz over voiced frames, dB/Hz
      },
      "z": {feature: z-score against the baseline, for each of Z_FEATURES (units: Z_FEATURE_UNITS)},
      "baseline": {"kind": "speaker" | "corpus_gender" | "corpus" | "none",
                   "n": utterances in it, "group": speaker id or gender},
      "flags": ["silent", "unvoiced", "no_transcript"],   # those that apply
      "lexical": null | {"lexicon": version, "n_words": int,
                         "hits": [{"word", "category", "negated", "phrase"}],
                         "categories": {category: non-negated count}},
      "error": null | "why the clip could not be measured" (then "values" is null)
    }

How each value is measured is in :mod:`reasoning.evidence.acoustic`; the baseline rule
(``MIN_SPEAKER_UTTERANCES``) in :func:`add_zscores`, and for a clip measured on its own
(``emoreason demo``, ``explain``) against a corpus in :func:`zscores_against` and
:func:`measure_alone`; the lexicon and negation in
:mod:`reasoning.evidence.lexical`.

Caching: the acoustic values are kept when ``version`` and ``measured`` match the row and its
file (size and modification time, :func:`reasoning.files.file_stamp`), so a re-run measures
only new, replaced or changed utterances (``--force`` measures all). The lexical part,
``word_rate`` and the z-scores are recomputed on every run: they depend on the transcript
and on the other rows of the manifest, and cost nothing.

Note on ``word_rate``: it divides the whole transcript by the speech measured in the clip, so
it is too high for clips cut short of their transcript (EmoDB's shared copy is cut at 2 s).
Rationales therefore cite the speaking rate through ``syllable_rate``, which is measured on
the audio that is there.
"""

from reasoning.evidence.acoustic import ACOUSTIC_FEATURES, measure_acoustics
from reasoning.evidence.lexical import DEFAULT_LEXICON, find_emotion_words, lexical_evidence, load_lexicon
from reasoning.evidence.measure import (EXTRACTOR_VERSION, MIN_SPEAKER_UTTERANCES, Z_FEATURE_UNITS, Z_FEATURES,
                                        add_zscores, measure_alone, measure_manifest, zscores_against)

__all__ = ["ACOUSTIC_FEATURES", "DEFAULT_LEXICON", "EXTRACTOR_VERSION", "MIN_SPEAKER_UTTERANCES",
           "Z_FEATURES", "Z_FEATURE_UNITS", "add_zscores", "find_emotion_words", "lexical_evidence",
           "load_lexicon", "measure_acoustics", "measure_alone", "measure_manifest", "zscores_against"]
