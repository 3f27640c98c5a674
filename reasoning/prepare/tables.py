"""The annotation tables of a corpus (CSV/TSV), read one way and checked row by row.

Python's csv module takes a row with too many fields (DictReader files the extras under
``None``) or too few (``None`` values) without a word, and an unbalanced quote quietly
joins the lines up to the next quote into one field, two rows becoming one path. Every
corpus loader reads its tables through :func:`read_csv`, which stops at each of these with
the file:line and the fix: shifted columns would otherwise put wrong labels in the manifest.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from reasoning.errors import UserError
from reasoning.prepare.corpus import Corpus

SEPARATOR_NAMES = {",": "comma", "\t": "tab"}


def read_text(path: Path, corpus: Corpus) -> str:
    """UTF-8 (with or without BOM); Windows-1252 copies are read too, and noted."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        corpus.notes.append(f"{path.name} is not UTF-8; read as Windows-1252.")
        return data.decode("cp1252", errors="replace")


def read_csv(path: Path, corpus: Corpus, delimiter: str = ",",
             multiline: tuple[str, ...] = ()) -> tuple[list[str], list[tuple[str, dict]]]:
    """``(header, [(where, record), ...])`` of a CSV/TSV file.

    ``header`` holds the column names, stripped; ``where`` is ``"file:line"`` of the line
    the record starts on; ``record`` maps each column name to its field. Lines with nothing
    in them (blank, or only separators as spreadsheets leave at the end) are skipped.
    Raises :class:`UserError` for a row with more or fewer fields than the header, a quote
    that is never closed, and a line break in a field of any column but ``multiline`` ones:
    free text (MELD's utterances) may span lines, an id or a path never does, so there it
    means an unbalanced quote swallowed the rows after it.
    """
    text = read_text(path, corpus)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    records, end = [], 0
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [h.strip() for h in fields]
                continue
            where = f"{path}:{start}"
            if len(fields) != len(header):
                n, sep = len(fields), SEPARATOR_NAMES.get(delimiter, repr(delimiter))
                raise UserError(
                    f"{where}: {n} field{'s' * (n != 1)} where the header has {len(header)} "
                    f"({', '.join(header)}). Give the row one field per column: fill in a "
                    f"missing one, quote one that holds a {sep} (\"like{delimiter} this\").")
            record = dict(zip(header, fields))
            for column, value in record.items():
                if column not in multiline and ("\n" in value or "\r" in value):
                    raise UserError(
                        f"{where}: the {column!r} field runs over lines {start}-{end}: an "
                        "unbalanced quote (\") joined them into one field. Close or remove "
                        "the quote (a quote inside a quoted field is written twice: \"\").")
            records.append((where, record))
    except csv.Error as err:
        raise UserError(f"{path}:{end + 1}: a quote (\") in the row starting here is not "
                        f"closed where it should be ({err}, line {reader.line_num}). Close or "
                        "remove the quote (a quote inside a quoted field is written twice: "
                        "\"\").") from err
    return header or [], records
