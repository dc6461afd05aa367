"""Reading a contact import's CSV (contacts_app.jobs): the whole file is checked when it is
uploaded (size, encoding, header, CSV syntax), each row when the job reaches it."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

from contacts_app.emails import email_error, normalize_email

IMPORT_MAX_BYTES = 5 * 1024 * 1024

# A cell may be as long as a file may be: an over-long cell is that row's error (its data is
# too large to store), not a file the csv module refuses to read on. The limit is per process.
csv.field_size_limit(max(csv.field_size_limit(), IMPORT_MAX_BYTES))

TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})


class ImportRefused(ValueError):
    """The upload can not be imported at all (nothing was recorded); `status` is 400 or 413."""

    def __init__(self, message: str, *, status: int = 400):
        self.status = status
        super().__init__(message)


class RowError(ValueError):
    """One CSV row can not be imported; the others still are."""

    def __init__(self, message: str, *, email: str = ""):
        self.email = email
        super().__init__(message)


@dataclass(frozen=True)
class CsvLayout:
    width: int
    email: int
    subscribed: int | None
    columns: tuple[tuple[int, str], ...]  # (index, data key) of every other named column


def _decode(content: bytes) -> str:
    try:
        text = content.decode("utf-8-sig")  # a byte-order mark is dropped
    except UnicodeDecodeError as exc:
        raise ImportRefused(
            f"The file is not UTF-8 text (invalid byte at offset {exc.start}); save it as "
            "CSV UTF-8."
        ) from None
    if not text.strip():
        raise ImportRefused("The file is empty.")
    return text


def _delimiter(text: str) -> str:
    """Comma, or the semicolon or tab a header line uses instead (spreadsheets in some
    locales export those)."""
    header = text.split("\n", 1)[0]
    return max((",", ";", "\t"), key=header.count)


def records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) for every record, blank lines left out; `line` is where the record
    starts (a quoted cell may span lines). A malformed file is an ImportRefused."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportRefused(f"Line {reader.line_num}: not readable as CSV ({exc}).") from None
        if cells:
            yield line, cells
        line = reader.line_num + 1


def parse_header(header: list[str]) -> CsvLayout:
    names = [name.strip() for name in header]
    lowered = [name.lower() for name in names]
    if any("\x00" in name for name in names):
        raise ImportRefused("The header contains a NUL character.")
    if "email" not in lowered:
        if any("@" in name for name in names):
            raise ImportRefused(
                "The first row must be a header naming the columns (one of them `email`); "
                "it looks like a row of data."
            )
        raise ImportRefused("The header has no `email` column.")
    for special in ("email", "subscribed"):
        if lowered.count(special) > 1:
            raise ImportRefused(f"The header has more than one `{special}` column.")
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            raise ImportRefused(f"The header names the column {name!r} twice.")
        seen.add(name)
    email = lowered.index("email")
    subscribed = lowered.index("subscribed") if "subscribed" in lowered else None
    columns = tuple(
        (i, name) for i, name in enumerate(names) if name and i not in (email, subscribed)
    )
    return CsvLayout(width=len(names), email=email, subscribed=subscribed, columns=columns)


@dataclass(frozen=True)
class ParsedCsv:
    text: str
    delimiter: str
    layout: CsvLayout
    rows: int


def csv_parse(content: bytes) -> ParsedCsv:
    """Checks a whole upload (size, encoding, header, CSV syntax) and counts its rows; rows
    themselves are checked one by one when the job runs."""
    if len(content) > IMPORT_MAX_BYTES:
        raise ImportRefused(
            f"The file is larger than {IMPORT_MAX_BYTES} bytes (5 MB); split it.", status=413
        )
    text = _decode(content)
    if "\x00" in text:  # the file is stored as text until the job runs: PostgreSQL refuses NUL
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ImportRefused(f"The file contains a NUL character (line {line}); is it really CSV?")
    delimiter = _delimiter(text)
    all_rows = records(text, delimiter)
    _, header = next(all_rows, (0, []))
    layout = parse_header(header)
    rows = sum(1 for _ in all_rows)
    if not rows:
        raise ImportRefused("The file has a header but no rows.")
    return ParsedCsv(text=text, delimiter=delimiter, layout=layout, rows=rows)


@dataclass(frozen=True)
class CsvRow:
    email: str
    subscribed: bool | None
    data: dict[str, str]


def csv_row(cells: list[str], layout: CsvLayout) -> CsvRow | None:
    """What one row asks for (None: the row is empty); RowError says what is wrong with it."""
    if len(cells) > layout.width:
        raise RowError(f"The row has {len(cells)} cells; the header has {layout.width} columns.")
    if any("\x00" in cell for cell in cells):
        raise RowError("The row contains a NUL character.")

    def cell(index: int | None) -> str:
        return cells[index].strip() if index is not None and index < len(cells) else ""

    raw_email = cell(layout.email)
    if not raw_email:
        if not any(cell.strip() for cell in cells):
            return None
        raise RowError("The email cell is empty.")
    email = normalize_email(raw_email)
    if problem := email_error(email):
        raise RowError(problem)
    subscribed = None
    if word := cell(layout.subscribed).lower():
        if word in TRUE_WORDS:
            subscribed = True
        elif word in FALSE_WORDS:
            subscribed = False
        else:
            raise RowError(
                f"subscribed is {cell(layout.subscribed)!r}; use true/false, 1/0 or yes/no.",
                email=email,
            )
    data = {name: value for index, name in layout.columns if (value := cell(index))}
    return CsvRow(email=email, subscribed=subscribed, data=data)
