"""The data-quality report of one ingest: a Markdown text a person reads in the Prefect UI, and a table of the
quarantined rows.

Every value taken from a response file is escaped before it is shown: HTML is neutralised (``<`` -> ``&lt;``),
Markdown table pipes and line breaks cannot break the table, and cells a spreadsheet would run as formulas are
prefixed with an apostrophe in the table artifact (which analysts export to CSV).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from consult.ingest.pipeline import ValidatedFile
from consult.ingest.store import FileSummary, IngestSummary, SourceCounts
from consult.rounds import neutralise_cell

MAX_EXAMPLES = 5
MAX_QUARANTINE_ROWS_SHOWN = 200
MAX_VALUE_CHARS = 80


def shown(value: Any, *, limit: int = MAX_VALUE_CHARS) -> str:
    """A cell value made safe to show in Markdown: escaped HTML, no line breaks, no pipes, shortened."""
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎")
    return html.escape(text, quote=True).replace("|", "&#124;").replace("`", "&#96;")


def _counts_line(summary: FileSummary) -> str:
    if summary.skipped_as_duplicate_file:
        return "Already ingested (same SHA-256): skipped, nothing changed."
    return (
        f"{summary.rows} rows: **{summary.accepted} accepted**, {summary.superseded} superseded, "
        f"{summary.partial} partial (not counted), **{summary.quarantined} quarantined**, "
        f"{summary.warnings} stored with warnings"
        + (f"; {summary.replaced_earlier} earlier response(s) superseded" if summary.replaced_earlier else "")
    )


def markdown_report(summary: IngestSummary, validated: list[ValidatedFile], data_docs: str | None) -> str:
    """The Markdown artifact ``dq-{year}``: per file, counts, expectations passed and failed, bad values."""
    lines = [f"# Data quality: round {summary.year}", ""]
    lines.append(
        f"{len(summary.files)} file(s): {summary.total('accepted')} accepted, {summary.total('superseded')} "
        f"superseded, {summary.total('partial')} partial, {summary.total('quarantined')} quarantined, "
        f"{summary.total('warnings')} with warnings."
    )
    if data_docs:
        lines.append(f"Great Expectations Data Docs: `{shown(data_docs, limit=300)}`")
    by_sha = {item.file.sha256: item for item in validated}
    for file_summary in summary.files:
        item = by_sha.get(file_summary.sha256)
        lines += ["", f"## {shown(file_summary.name)}", ""]
        if item is not None:
            described = f"layout {item.file.layout}, {item.file.file_format}"
            if item.file.encoding:
                described += f", encoding {item.file.encoding}, delimiter `{item.file.delimiter}`"
            lines.append(f"Read as {described}; sha256 `{item.file.sha256[:12]}…`, {item.file.size_bytes:,} bytes.")
            recognised = item.file.recognised
            if recognised:
                lines.append(
                    f"Recognised: {recognised.get('tool')} export, {recognised.get('heading_style')} headings; "
                    f"response id column `{shown(str(recognised.get('id_column') or 'none'))}`, completeness from "
                    f"`{shown(str(recognised.get('completeness_column') or 'none: every row complete'))}`."
                )
        lines.append(_counts_line(file_summary))
        if item is None or (item.duplicate and item.validation.suite_run is None):
            continue
        if item.duplicate:  # stored by an earlier run that stopped before its report: the report, rebuilt
            lines.append("Its report was missing (an earlier run stopped after storing it): validated again for "
                         "this report and the Data Docs; nothing stored twice.")
        for note in item.file.notes:
            if note.startswith(("ignored", "no column", "no submit-date", "skipped", "took", "read from")) or \
                    "not shown / not applicable" in note or ": read from" in note:
                lines.append(f"- note: {shown(note, limit=300)}")
        unmatched = item.match["match_error"][item.match["match_error"] != ""]
        lines += ["", "| check | field | severity | result | rows failing | examples of bad values |",
                  "|---|---|---|---|---|---|"]
        if len(item.match):
            examples = ", ".join(f"`{shown(v)}`" for v in list(dict.fromkeys(unmatched.tolist()))[:MAX_EXAMPLES])
            lines.append(
                f"| partnership matched | partnership | error | {'passed' if unmatched.empty else 'FAILED'} "
                f"| {len(unmatched)} of {len(item.match)} | {examples} |"
            )
        for outcome in item.validation.outcomes:
            examples = ", ".join(f"`{shown(value)}`" for value in outcome.examples[:MAX_EXAMPLES])
            lines.append(
                f"| {outcome.rule} ({outcome.expectation}) | {shown(outcome.field)} | {outcome.severity} "
                f"| {'passed' if outcome.success else 'FAILED'} | {outcome.unexpected} of {outcome.checked} "
                f"| {examples} |"
            )
        if item.validation.suite_source:
            lines.append(f"\nSuite: `{shown(Path(item.validation.suite_source).name, limit=200)}`")
    return "\n".join(lines) + "\n"


def sources_markdown(year: int, sources: list[SourceCounts]) -> str:
    """The round's responses by source, the response form beside the files (appended to ``dq-YEAR``)."""
    lines = ["", f"## Responses of round {year} by source", "",
             "| source | layout | submissions | accepted | superseded | partial |", "|---|---|---|---|---|---|"]
    for item in sources:
        lines.append(f"| {shown(item.source)} | {item.layout} | {item.submissions} | {item.accepted} "
                     f"| {item.superseded} | {item.partial} |")
    if not sources:
        lines.append("| (no response yet) | | 0 | 0 | 0 | 0 |")
    return "\n".join(lines) + "\n"


def quarantine_table(summary: IngestSummary, quarantined: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Rows of the table artifact ``dq-{year}-quarantine`` (first rows only, the CLI lists them all)."""
    table = []
    for entry in quarantined[:MAX_QUARANTINE_ROWS_SHOWN]:
        reasons = entry["reasons"]
        table.append(
            {
                "id": str(entry["id"]),
                "file": neutralise_cell(shown(entry["file"])),
                "row": str(entry["row_number"]),
                "partnership": neutralise_cell(shown(entry.get("partnership") or "")),
                "expectation": "; ".join(shown(reason.get("expectation", "")) for reason in reasons),
                "value": neutralise_cell("; ".join(shown(reason.get("value", "")) for reason in reasons)),
                "reason": neutralise_cell("; ".join(shown(reason.get("message", ""), limit=200) for reason in reasons)),
            }
        )
    return table


def report_path(output_dir: Path, year: int) -> Path:
    """Where the data-quality report of round ``year`` is written (also posted as the artifact ``dq-YEAR``)."""
    return output_dir / "data-quality" / f"dq-{year}.md"


def write_report(output_dir: Path, year: int, markdown: str) -> Path:
    path = report_path(output_dir, year)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown, encoding="utf-8")
    return path
