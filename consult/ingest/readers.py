"""Read survey exports into one canonical table of strings, whatever tool produced them.

The file's format is told from its bytes (an XLSX is a zip, EUSurvey's results are XML; otherwise CSV, or JSON
lines by name), the tool that wrote it from its content (:mod:`consult.ingest.tools`: LimeSurvey, Qualtrics,
KoBoToolbox, ODK Central, EUSurvey, or plain), and its columns are mapped to the questionnaire's answer fields by
:mod:`consult.ingest.columns`.

CSV files may be UTF-8, UTF-8 with a BOM or cp1252, comma- or semicolon-separated: both are detected and
reported. Every cell is read as a string, exactly as exported (``""`` for an empty cell), so that the raw row can
be kept unchanged; typing happens later in :mod:`consult.ingest.normalise`.

The canonical table (``ResponseFile.cells``, see :mod:`consult.ingest.columns`) has the identity columns
``token``, ``partnership_id``, ``email``, ``submitted_at``, ``response_id``, ``complete`` and one column per answer
field present in the file. Its index is the row number as a spreadsheet shows it (the header is row 1 in a plain
CSV; a Qualtrics export's first response is row 4).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from consult.errors import ConsultError, find_cause
from consult.ingest import tools
from consult.ingest.columns import IDENTITY_FIELDS, canonical_cells
from consult.questionnaire import Questionnaire

Layout = str  # the tool that wrote the file (see consult.ingest.tools): limesurvey, qualtrics, kobo, ...
FileFormat = Literal["csv", "xlsx", "jsonl", "xml"]

__all__ = ["IDENTITY_FIELDS", "ResponseFile", "read_response_file", "read_table"]
_EUSURVEY_MARKER = "contributionid"
_MAX_METADATA_ROWS = 30


@dataclass(frozen=True)
class ReadLimits:
    """What a response file may hold before it is read (defaults: consult.settings.Settings)."""

    xlsx_max_uncompressed_bytes: int = 512 * 1024 * 1024
    xlsx_max_compression_ratio: int = 200
    max_rows: int = 2_000_000

    @classmethod
    def from_settings(cls, settings: Any) -> ReadLimits:
        return cls(
            xlsx_max_uncompressed_bytes=settings.xlsx_max_uncompressed_bytes,
            xlsx_max_compression_ratio=settings.xlsx_max_compression_ratio,
            max_rows=settings.max_rows,
        )


# A member smaller than this is never a bomb, whatever its ratio (a sheet of empty cells compresses well).
_RATIO_CHECKED_FROM = 1024 * 1024


@dataclass
class ResponseFile:
    """A response file as read: its identity, how it was read, its raw cells and the canonical cells."""

    path: str
    name: str
    sha256: str
    size_bytes: int
    file_format: FileFormat
    layout: Layout
    encoding: str | None
    delimiter: str | None
    raw: pd.DataFrame
    cells: pd.DataFrame
    question_columns: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)
    has_submit_date: bool = True
    # What the file was recognised as: tool, heading style, id column, completeness column (see tools.Recognised).
    recognised: dict[str, str | None] = field(default_factory=dict)
    # The file's bytes, zlib-compressed, read in the same pass as its digest: what is stored is what was
    # hashed and parsed, even if the file changes on disk before the store step.
    content: bytes = b""

    @property
    def row_count(self) -> int:
        return len(self.raw)


def file_digest(path: Path) -> tuple[str, int, bytes]:
    """(sha256, size, zlib-compressed bytes) of a file, in one pass."""
    digest = hashlib.sha256()
    # Level 1: a 112 MB export compresses to 16 MB in 0.5 s; level 6 saves 2 MB more for 1.4 s.
    compressor = zlib.compressobj(1)
    parts: list[bytes] = []
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            parts.append(compressor.compress(chunk))
            size += len(chunk)
    parts.append(compressor.flush())
    return digest.hexdigest(), size, b"".join(parts)


@dataclass(frozen=True)
class Table:
    """A file's cells as exported (all strings), indexed by spreadsheet row number, and how it was read."""

    cells: pd.DataFrame
    file_format: FileFormat
    encoding: str | None
    delimiter: str | None
    notes: list[str]


def read_table(path: Path, limits: ReadLimits | None = None) -> Table:
    """The raw cells of an export (no mapping to questions); a ConsultError naming the file if unreadable."""
    limits = limits or ReadLimits()
    suffix = path.suffix.lower()
    # By what the file is, not by its name: an XLSX is a zip, EUSurvey's results are XML.
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic.startswith(b"PK\x03\x04") and suffix not in (".jsonl", ".ndjson"):
        suffix = ".xlsx"
    elif tools.looks_like_xml(path):
        table, notes = tools.read_eusurvey_xml(path)
        return Table(cells=table, file_format="xml", encoding="utf-8", delimiter=None, notes=notes)
    if suffix in (".xlsx", ".xlsm"):
        check_archive(path, limits)
        table, header_row, notes = _read_xlsx(path, limits)
        file_format: FileFormat = "xlsx"
        encoding = delimiter = None
    elif suffix in (".jsonl", ".ndjson"):
        table, header_row, notes = _read_jsonl(path)
        file_format, encoding, delimiter = "jsonl", "utf-8", None
    else:
        encoding, delimiter = detect_csv_dialect(path)
        try:
            table, header_row, notes = _read_csv(path, encoding, delimiter)
        except UnicodeDecodeError:  # the whole file was checked: only a file changed meanwhile gets here
            raise ConsultError(f"{path}: the text is not {encoding}; save it as UTF-8 CSV") from None
        file_format = "csv"
    if len(table) > limits.max_rows:
        raise ConsultError(
            f"{path}: refused: more than {limits.max_rows:,} rows (limit CONSULT_MAX_ROWS); split the file"
        )
    if header_row is not None:
        table.index = pd.RangeIndex(header_row + 1, header_row + 1 + len(table), name="row_number")
    if file_format != "csv":  # a CSV's bytes were checked for NUL already
        _refuse_nul_cells(path, table)
    return Table(cells=table, file_format=file_format, encoding=encoding, delimiter=delimiter, notes=notes)


def read_response_file(
    path: Path | str, questionnaire: Questionnaire, limits: ReadLimits | None = None
) -> ResponseFile:
    """Read one export; any problem that stops reading is one ConsultError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ConsultError(f"{path}: is a folder, not a file; give the export file(s) inside it")
    if not path.exists():
        raise ConsultError(f"{path}: file not found")
    if not path.is_file():
        raise ConsultError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise ConsultError(f"{path}: the file is empty (not even a header row)")
    # Hashing and compressing run beside the parsing, on the other core: zlib, hashlib and pandas' tokenizer
    # all release the GIL (a million-row export: 0.8 s saved of 3).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest") as pool:
        digest = pool.submit(file_digest, path)
        table = read_table(path, limits)
        sha256, size, content = digest.result()
    recognised = tools.recognise(table.cells, table.file_format)
    raw = tools.prepare(table.cells, recognised)
    if raw.empty:
        # A header and nothing under it is an export gone wrong, not a round without answers.
        raise ConsultError(f"{path}: the file has a header row but no response row")
    cells, question_columns, mapping_notes = canonical_cells(path, raw, questionnaire, recognised)
    return ResponseFile(
        path=str(path),
        name=path.name,
        sha256=sha256,
        size_bytes=size,
        file_format=table.file_format,
        layout=recognised.tool,
        encoding=table.encoding,
        delimiter=table.delimiter,
        raw=raw,
        cells=cells,
        question_columns=question_columns,
        notes=table.notes + mapping_notes,
        has_submit_date="submitted_at" in cells.attrs.get("identity_columns", ()),
        recognised=recognised.report(),
        content=content,
    )


# --- CSV ---------------------------------------------------------------------------------------------------


def detect_csv_dialect(path: Path) -> tuple[str, str]:
    """(encoding, delimiter) of a CSV file: UTF-8 with BOM, UTF-8, else cp1252, decided on the whole file; ``,`` or
    ``;`` from the header line.

    A file that is UTF-8 in part and something else elsewhere is refused, naming the line of the first byte
    that is not UTF-8: reading it all as cp1252 would garble every accent (``Café`` -> ``CafÃ©``) without a
    word. A NUL byte (UTF-16, a binary file, or a cell that the parser would cut short) is refused with its line.
    """
    with path.open("rb") as handle:
        head = handle.read(64 * 1024)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConsultError(f"{path}: not a text file in UTF-8 or cp1252 (UTF-16); save it as UTF-8 CSV")
    encoding = _whole_file_encoding(path)
    header = head.decode(encoding, errors="replace").lstrip("\ufeff").splitlines()[0] if head.strip() else ""
    unquoted = re.sub(r'"[^"]*"', "", header)
    delimiter = ";" if unquoted.count(";") > unquoted.count(",") else ","
    return encoding, delimiter


# Well-formed multi-byte UTF-8 sequences: a cp1252 file practically never holds one (it would read "Ã©").
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _whole_file_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) when every byte of the file decodes so; cp1252 when no byte sequence of the
    file is UTF-8 beyond ASCII; otherwise a ConsultError naming the line of the first byte that is not UTF-8.

    Streams the file in 1 MiB chunks (a 100 MB export is never held twice)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes of the file before the current chunk
    lines = 1  # line number at the start of the current chunk
    first_bad: tuple[int, int, int] | None = None  # (line, byte value, offset)
    bom = False
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            if offset == 0:
                bom = chunk.startswith(codecs.BOM_UTF8)
            nul = chunk.find(b"\x00")
            if nul >= 0:
                nul_line = lines + chunk.count(b"\n", 0, nul)
                raise ConsultError(
                    f"{path}: line {nul_line} holds a NUL byte (0x00): not a text export "
                    "(UTF-16 or binary?); save it as UTF-8 CSV"
                )
            if first_bad is None:
                try:
                    decoder.decode(chunk, final=False)
                except UnicodeDecodeError as error:
                    # The failing byte may sit a few bytes into the chunk's carried-over start: count from 0.
                    start = max(error.start, 0)
                    first_bad = (lines + chunk.count(b"\n", 0, start), chunk[start] if start < len(chunk) else 0,
                                 offset + start)
            lines += chunk.count(b"\n")
            offset += len(chunk)
    if first_bad is None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            first_bad = (lines, 0, offset)
    if first_bad is None:
        return "utf-8-sig" if bom else "utf-8"
    line, byte, _ = first_bad
    # Only now, for a file that is not UTF-8 throughout: does any of it read as UTF-8 (then it is mixed)? Searched
    # in a second pass, as the common case (UTF-8 or ASCII) never needs it: 2.5 s of a 112 MB file otherwise.
    if bom or _has_utf8_sequence(path):
        raise ConsultError(
            f"{path}: line {line}: byte 0x{byte:02X} is not UTF-8 while the rest of the file is: mixed encodings; "
            "save the file again as UTF-8 CSV"
        )
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                chunk.decode("cp1252")
    except UnicodeDecodeError:
        raise ConsultError(
            f"{path}: line {line}: byte 0x{byte:02X}: the text is neither UTF-8 nor cp1252; save it as UTF-8 CSV"
        ) from None
    return "cp1252"


def _has_utf8_sequence(path: Path) -> bool:
    """Whether the file holds a well-formed multi-byte UTF-8 sequence (a sequence split across two 1 MiB chunks
    is found from the bytes kept over)."""
    carried = b""
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            if _UTF8_MULTIBYTE.search(carried + chunk):
                return True
            carried = chunk[-3:]
    return False


def _read_csv(path: Path, encoding: str, delimiter: str) -> tuple[pd.DataFrame, int, list[str]]:
    try:
        with warnings.catch_warnings():
            # A row longer than the header would otherwise silently become the index or lose cells.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(
                path,
                index_col=False,
                sep=delimiter,
                encoding=encoding,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                skip_blank_lines=True,
                engine="c",
            )
    except pd.errors.EmptyDataError:
        raise ConsultError(f"{path}: the file is empty (not even a header row)") from None
    except pd.errors.ParserWarning:
        raise ConsultError(f"{path}: not a readable CSV file (a row has more cells than the header)") from None
    except UnicodeDecodeError:
        raise  # the caller tries the next encoding
    except (pd.errors.ParserError, ValueError) as error:
        raise ConsultError(f"{path}: not a readable CSV file ({str(error).strip().splitlines()[0]})") from None
    table = table.fillna("")
    # pandas renames a repeated heading ("markets", "markets.1"): the header as written decides.
    table.columns = [str(column).strip() for column in _csv_header(path, encoding, delimiter, len(table.columns))]
    _refuse_duplicate_headers(path, table)
    notes = [f"read as CSV, encoding {encoding}, delimiter {delimiter!r}"]
    return table, 1, notes


def _csv_header(path: Path, encoding: str, delimiter: str, width: int) -> list[str]:
    """The header row exactly as written (the first record, quotes and all, via the same parser)."""
    header = pd.read_csv(path, header=None, nrows=1, sep=delimiter, encoding=encoding, dtype=str,
                         keep_default_na=False, na_filter=False, index_col=False, engine="c")
    names = ["" if value is None else str(value) for value in header.iloc[0].tolist()] if len(header) else []
    return (names + [""] * width)[:width]


# --- XLSX --------------------------------------------------------------------------------------------------


def check_archive(path: Path, limits: ReadLimits) -> None:
    """Refuse a zip bomb before anything inflates it, from the sizes in the archive's central directory.

    The declared sizes can be trusted as bounds: Python's zipfile stops inflating a member at its declared size
    (and then fails its CRC check), so a member cannot grow past what is checked here."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ConsultError(f"{path}: not a readable XLSX file ({str(error).strip().splitlines()[0]})") from None
    total = 0
    for member in members:
        total += member.file_size
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size >= _RATIO_CHECKED_FROM and ratio > limits.xlsx_max_compression_ratio:
            raise ConsultError(
                f"{path}: refused: {member.filename} inflates {ratio:,.0f} times "
                f"(limit CONSULT_XLSX_MAX_COMPRESSION_RATIO={limits.xlsx_max_compression_ratio}); "
                "not what a survey tool exports"
            )
    if total > limits.xlsx_max_uncompressed_bytes:
        raise ConsultError(
            f"{path}: refused: the workbook inflates to {total:,} bytes "
            f"(limit CONSULT_XLSX_MAX_UNCOMPRESSED_BYTES={limits.xlsx_max_uncompressed_bytes:,})"
        )


def _read_xlsx(path: Path, limits: ReadLimits) -> tuple[pd.DataFrame, int | None, list[str]]:
    # openpyxl parses with defusedxml when it is installed, which refuses entity declarations (billion laughs).
    import openpyxl
    from defusedxml import DefusedXmlException

    # Rows are counted as they stream: a sheet of millions of rows stops at the limit, not after it is read.
    # (The header and EUSurvey's metadata rows come on top of the limit on response rows.)
    row_limit = limits.max_rows + _MAX_METADATA_ROWS + 1
    try:
        # A file handle, not the path: openpyxl would go by the name's extension, and a workbook saved as .csv is
        # still a workbook.
        with path.open("rb") as handle:
            workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
            try:
                sheet = workbook.worksheets[0]
                rows = []
                for row in sheet.iter_rows(values_only=True):
                    if len(rows) >= row_limit:
                        raise ConsultError(
                            f"{path}: refused: more than {limits.max_rows:,} rows (limit CONSULT_MAX_ROWS); "
                            "split the file"
                        )
                    rows.append([_xlsx_cell(value) for value in row])
            finally:
                workbook.close()
    except ConsultError:
        raise
    except Exception as error:  # noqa: BLE001 - openpyxl wraps zip, XML and defusedxml errors in its own types
        refused = _entity_refusal(error, DefusedXmlException)
        if refused is not None:
            raise ConsultError(
                f"{path}: refused: the XLSX contains XML entity declarations ({type(refused).__name__}), "
                "which a survey tool never writes; re-export the file"
            ) from None
        if isinstance(error, zipfile.BadZipFile | KeyError | OSError | ValueError | TypeError):
            raise ConsultError(f"{path}: not a readable XLSX file ({str(error).strip().splitlines()[0]})") from None
        raise ConsultError(f"{path}: not a readable XLSX file ({type(error).__name__}: {error})") from None
    # Keep the sheet's own row numbers (1-based) so that "row 7" means row 7 in Excel; skip empty rows.
    numbered = [(number, row) for number, row in enumerate(rows, start=1) if any(cell != "" for cell in row)]
    if not numbered:
        raise ConsultError(f"{path}: the workbook's first sheet is empty (not even a header row)")
    header_index = _find_header_row([row for _, row in numbered])
    header_number, header_cells = numbered[header_index]
    header = [cell.strip() for cell in header_cells]
    width = len(header)
    body = [(row + [""] * width)[:width] for _, row in numbered[header_index + 1 :]]
    index = pd.Index([number for number, _ in numbered[header_index + 1 :]], name="row_number", dtype="int64")
    table = pd.DataFrame(body, columns=header, index=index, dtype=str)
    _refuse_duplicate_headers(path, table)
    notes = ["read as XLSX (first sheet)"]
    if header_number > 1:
        notes.append(f"skipped {header_number - 1} metadata row(s) above the header")
    return table, None, notes


def _entity_refusal(error: BaseException, refusal_type: type[BaseException]) -> BaseException | None:
    """The defusedxml refusal behind an openpyxl error, if that is what it is."""
    return find_cause(error, refusal_type)


def _find_header_row(rows: list[list[str]]) -> int:
    """EUSurvey puts a few metadata rows above the header: the header is the row naming ``Contribution Id``."""
    for index, row in enumerate(rows[:_MAX_METADATA_ROWS]):
        if any(_normalise_header(cell) == _EUSURVEY_MARKER for cell in row):
            return index
    return 0


def _xlsx_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


# --- JSON lines --------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, int, list[str]]:
    records: list[dict[str, str]] = []
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line, object_pairs_hook=_refusing_duplicate_keys)
                except json.JSONDecodeError as error:
                    raise ConsultError(f"{path}: line {line_number} is not valid JSON ({error.msg})") from None
                except _DuplicateKey as duplicate:
                    raise ConsultError(
                        f"{path}: line {line_number}: the key {duplicate.args[0]!r} appears twice"
                    ) from None
                if not isinstance(record, dict):
                    raise ConsultError(f"{path}: line {line_number} is not a JSON object")
                records.append({str(key): _json_cell(value) for key, value in record.items()})
    except UnicodeDecodeError:
        raise ConsultError(f"{path}: JSON lines must be UTF-8") from None
    if not records:
        raise ConsultError(f"{path}: the file holds no JSON record")
    table = pd.DataFrame.from_records(records).fillna("").astype(str)
    _refuse_duplicate_headers(path, table)
    return table, 0, ["read as JSON lines"]


class _DuplicateKey(ValueError):
    pass


def _refusing_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads keeps the last of two equal keys without a word: the file is refused instead."""
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise _DuplicateKey(key)
        record[key] = value
    return record


def _json_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ";".join(_json_cell(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# --- headings -----------------------------------------------------------------------------------------------


def _normalise_header(text: str) -> str:
    return tools.normalise_header(text)


def _refuse_duplicate_headers(path: Path, table: pd.DataFrame) -> None:
    """A heading written twice is kept apart (``X``, ``X (2)``) and recorded: the mapping refuses the file only
    when a question reads it (see consult.ingest.columns)."""
    seen: dict[str, int] = {}
    renamed: list[str] = []
    repeated: dict[str, list[str]] = {}
    for column in map(str, table.columns):
        count = seen.get(column, 0) + 1
        seen[column] = count
        name = column if count == 1 or not column else f"{column} ({count})"
        renamed.append(name)
        if count > 1 and column:
            repeated.setdefault(column, [column]).append(name)
    if repeated:
        table.columns = renamed
        table.attrs["repeated_headings"] = repeated


def _refuse_nul_cells(path: Path, table: pd.DataFrame) -> None:
    """A NUL character is cut off or refused by what comes later (C strings, PostgreSQL text): refused here,
    with its row, rather than stored shortened."""
    for column in table.columns:
        found = table[column].str.contains("\x00", regex=False)
        if found.any():
            raise ConsultError(f"{path}: row {found.idxmax()}, column {column!r} holds a NUL character (0x00)")
