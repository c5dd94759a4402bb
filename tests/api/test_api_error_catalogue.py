"""``docs/error-codes.md`` is the catalogue of ``otherix.errors.ErrorCode``.

Fails when a code is missing from the doc, when the doc lists a code the code
base does not have, or when a class answers with a status its row omits.
"""

from __future__ import annotations

import re
from pathlib import Path

from otherix.errors import ErrorCode, OtherixError, all_error_classes

DOC = Path(__file__).resolve().parents[2] / "docs" / "error-codes.md"
ROW = re.compile(r"^\|\s*`(?P<code>[a-z0-9_]+)`\s*\|\s*(?P<status>[^|]*)\|(?P<rest>.*)\|\s*$")


def doc_rows() -> dict[str, set[int]]:
    rows: dict[str, set[int]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m is None:
            continue
        code = m["code"]
        assert code not in rows, f"docs/error-codes.md lists {code!r} twice"
        rows[code] = {int(s) for s in re.findall(r"\b[1-5]\d\d\b", m["status"])}
        meaning, when = (c.strip() for c in m["rest"].split("|", 1))
        assert meaning, f"{code}: the meaning column is empty"
        assert when, f"{code}: the 'when it happens' column is empty"
    return rows


def test_every_code_is_in_the_doc():
    missing = sorted({str(c) for c in ErrorCode} - set(doc_rows()))
    assert not missing, f"add these codes to docs/error-codes.md: {missing}"


def test_the_doc_lists_no_unknown_code():
    extra = sorted(set(doc_rows()) - {str(c) for c in ErrorCode})
    assert not extra, f"docs/error-codes.md lists codes otherix.errors lacks: {extra}"


def test_every_class_status_is_in_its_row():
    rows = doc_rows()
    for cls in all_error_classes():
        if cls is OtherixError:
            continue
        assert cls.http_status in rows[str(cls.code)], (
            f"{cls.__name__} answers {cls.http_status} {cls.code}; "
            f"add {cls.http_status} to its row in docs/error-codes.md"
        )


def test_every_code_has_a_class():
    """A code no class raises would be a doc entry nothing can produce."""
    used = {str(cls.code) for cls in all_error_classes()}
    assert {str(c) for c in ErrorCode} <= used


def test_codes_are_snake_case_and_unique():
    values = [str(c) for c in ErrorCode]
    assert len(values) == len(set(values))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", v) for v in values)
