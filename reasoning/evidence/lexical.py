"""Lexical evidence: emotion-bearing words of the transcript, with negation.

The lexicon is a TSV of ``word<TAB>category`` (see ``data/lexicon/README.md``). Matching is
on lower-case tokens; a lexicon entry may span several tokens ("get out"). A match preceded,
within ``NEGATION_SCOPE`` tokens and without crossing punctuation or "but", by a negator
("not", "never", "n't", ...) is recorded as negated and not counted in its category.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from reasoning.errors import UserError

DEFAULT_LEXICON = Path(__file__).resolve().parents[2] / "data" / "lexicon" / "emotion_words_en.tsv"
NEGATORS = frozenset({"not", "no", "never", "neither", "nor", "without", "hardly", "barely",
                      "nobody", "nothing", "none", "nowhere", "cannot", "dont", "isnt", "wasnt"})
NEGATION_SCOPE = 3
# Tokens that end a negation's scope: "not tired but happy" -> happy is not negated.
SCOPE_BREAKERS = frozenset({"but", "however", "although", "though", "yet"})
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)*|[.,;:!?()\"-]")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens (apostrophes kept) and punctuation tokens."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return _TOKEN.findall(text)


def words(text: str) -> list[str]:
    """The word tokens of ``text`` (no punctuation): what a quote is compared on."""
    return [t for t in tokenize(text) if t[0].isalnum()]


def _is_negator(token: str) -> bool:
    return token in NEGATORS or token.endswith("n't")


@functools.lru_cache(maxsize=8)
def load_lexicon(path: str | Path = DEFAULT_LEXICON) -> tuple[str, dict[tuple[str, ...], str]]:
    """Read a lexicon TSV. Returns ``(version, {token tuple: category})``.

    The version is the ``version X`` named on the first comment line, else the file name.
    Raises :class:`UserError` naming the file and line for a malformed line.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such lexicon file. Pass --lexicon with a TSV of "
                        "'word<TAB>category' lines (see data/lexicon/README.md).")
    version, entries = path.stem, {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#"):
            found = re.search(r"version\s+([\w-]+(?:\.[\w-]+)*)", line)
            if n == 1 and found:
                version = found.group(1)
            continue
        if not line.strip() or line.lower().startswith("word\t"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise UserError(f"{path}:{n}: expected 'word<TAB>category', got {line!r}.")
        entries[tuple(words(parts[0]))] = parts[1].strip().lower()
    return version, entries


def find_emotion_words(text: str, lexicon: dict[tuple[str, ...], str]) -> list[dict]:
    """Find lexicon entries in ``text``, longest match first.

    Returns one dict per match: ``word`` (the entry as written in the text), ``category``,
    ``negated`` (bool) and ``phrase`` (the words from the negator to the entry when negated,
    else the entry: the span a rationale should quote).
    """
    tokens = tokenize(text)
    longest = max((len(k) for k in lexicon), default=0)
    hits, i = [], 0
    while i < len(tokens):
        for n in range(min(longest, len(tokens) - i), 0, -1):
            key = tuple(tokens[i:i + n])
            if key in lexicon:
                break
        else:
            i += 1
            continue
        negator = None
        for j in range(i - 1, max(i - 1 - NEGATION_SCOPE, -1), -1):
            if not tokens[j][0].isalnum() or tokens[j] in SCOPE_BREAKERS:
                break
            if _is_negator(tokens[j]):
                negator = j
                break
        start = i if negator is None else negator
        hits.append({"word": " ".join(key), "category": lexicon[key],
                     "negated": negator is not None,
                     "phrase": " ".join(t for t in tokens[start:i + n] if t[0].isalnum())})
        i += n
    return hits


def lexical_evidence(text: str | None, lexicon_path: str | Path = DEFAULT_LEXICON) -> dict | None:
    """The ``evidence["lexical"]`` object for one transcript (``None`` without one)."""
    if not text or not text.strip():
        return None
    version, lexicon = load_lexicon(str(lexicon_path))
    hits = find_emotion_words(text, lexicon)
    categories: dict[str, int] = {}
    for hit in hits:
        if not hit["negated"]:
            categories[hit["category"]] = categories.get(hit["category"], 0) + 1
    return {"lexicon": version, "n_words": len(words(text)), "hits": hits,
            "categories": categories}
