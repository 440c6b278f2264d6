"""Publishing a round: the summary (HTML and Markdown), the indicator table and the success stories as CSV, written
under ``OUT/YEAR/`` and recorded in ``publications``.

The files hold no timestamp and everything in them is derived from the data in a fixed order, so re-publishing the
same data gives byte-identical files (and the same hashes in ``publications``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.orm import Session

from consult.errors import ConsultError
from consult.indicators import MARKET_INDICATOR, TABLE_COLUMNS, IndicatorReport, format_number
from consult.narrative import SMALL_BASE, Paragraph, build_narrative, count, number, percent, rate
from consult.questionnaire import country_name
from consult.rounds import get_round, neutralise_cell
from consult.settings import TEMPLATES_DIR
from db.models import Publication

CURRENT_COLOUR = "#1d4f91"
PREVIOUS_COLOUR = "#a9b4c2"


# --------------------------------------------------------------------------------------------------------------
# Charts: geometry computed here, drawn as inline SVG by the template


@dataclass(frozen=True)
class Bar:
    label: str
    lines: tuple[str, ...]
    value: float
    previous: float | None
    value_text: str
    previous_text: str
    y: float
    width: float
    previous_width: float


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    description: str
    year: int
    previous_year: int | None
    bars: tuple[Bar, ...]
    width: int
    height: int
    label_width: int
    bar_height: int
    row_height: int
    top: int
    current_colour: str = CURRENT_COLOUR
    previous_colour: str = PREVIOUS_COLOUR

    @property
    def bar_area(self) -> int:
        return self.width - self.label_width - 48


def bar_chart(chart_id: str, title: str, description: str, items: list[tuple[str, float, float | None]], *,
              year: int, previous_year: int | None) -> Chart:
    """Horizontal bars, last year's (grey) above this year's (blue) for each item, on a common scale."""
    width, bar_height, top = 560, 12, 12
    wrapped = [_wrap(label, 28) for label, _, _ in items]
    longest = max((len(line) for lines in wrapped for line in lines), default=10)
    label_width = min(220, int(longest * 7.2) + 14)
    with_previous = previous_year is not None
    row_height = 2 * bar_height + 16 if with_previous else bar_height + 16
    scale_max = max([v for _, v, _ in items] + [p or 0 for _, _, p in items] + [1])
    area = width - label_width - 48
    bars = []
    for index, (label, value, previous) in enumerate(items):
        bars.append(Bar(
            label=label,
            lines=wrapped[index],
            value=value,
            previous=previous,
            value_text=number(value),
            previous_text="" if previous is None else number(previous),
            y=top + index * row_height,
            width=round(area * value / scale_max, 1),
            previous_width=round(area * (previous or 0) / scale_max, 1),
        ))
    height = top + len(items) * row_height + 6
    return Chart(chart_id, title, description, year, previous_year, tuple(bars), width, height, label_width,
                 bar_height, row_height, top)


def _wrap(label: str, width: int) -> tuple[str, ...]:
    """At most two lines of about ``width`` characters, so that long activity names stay readable."""
    words, lines, line = label.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    if len(lines) > 2:
        lines = [lines[0], " ".join(lines[1:])]
        if len(lines[1]) > width:
            lines[1] = lines[1][: width - 1].rstrip() + "\u2026"
    return tuple(lines)


# --------------------------------------------------------------------------------------------------------------
# Tables: every cell pre-formatted, so that the HTML and Markdown templates only lay them out


@dataclass(frozen=True)
class Cell:
    text: str
    kind: str = ""  # "num" for right-aligned figures, "up"/"down"/"new" for changes


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    columns: tuple[Cell, ...]
    rows: tuple[tuple[Cell, ...], ...]
    note: str = ""


@dataclass
class SummaryContext:
    year: int
    previous_year: int | None
    title: str
    lead: str
    key_figures: list[tuple[str, str]]
    paragraphs: list[Paragraph]
    charts: list[Chart]
    tables: list[Table]
    stories: list[dict[str, str]]
    files: dict[str, str] = field(default_factory=dict)


def _v(value: object) -> float | None:
    return None if value is None or pd.isna(value) else float(value)  # type: ignore[arg-type]


def change_cell(row: pd.Series, *, unit: str = "count") -> Cell:
    comparison = str(row["comparison"])
    if comparison == "first_round":
        return Cell("", "num")
    if comparison == "new":
        return Cell("new", "num new")
    change = _v(row["change"])
    if change is None:
        return Cell("", "num")
    kind = "num up" if change > 0 else "num down" if change < 0 else "num"
    if unit == "percent":
        return Cell(f"{change:+.1f} pts".replace("-", "\u2212"), kind)
    text = f"{'+' if change > 0 else ''}{number(change)}".replace("-", "\u2212")
    previous = _v(row["previous_value"])
    if unit == "count" and previous and previous >= SMALL_BASE and _v(row["change_pct"]) is not None:
        text += f" ({_v(row['change_pct']):+.1f}%)".replace("-", "\u2212")
    if comparison == "added":
        text += " (new)"
    elif comparison == "dropped":
        text += " (dropped)"
    return Cell(text, kind)


def _value_text(row: pd.Series, unit: str, column: str = "value", denominator: str = "denominator") -> str:
    value = _v(row[column])
    if value is None:
        return "\u2014" if column == "previous_value" else "n/a"
    if unit == "percent":
        base = _v(row[denominator])
        return rate(value * base / 100.0, base) if base else percent(value)
    return number(value)


def overview_table(report: IndicatorReport) -> Table:
    spec = [
        ("consulted", "", "Partnerships consulted", "count"),
        ("responses", "", "Responses collected", "count"),
        ("response_rate", "", "Response rate", "percent"),
    ]
    strands = sorted(int(s) for s in report.rows("response_rate")["strand"].dropna().unique())
    spec += [("response_rate", f"strand={s}", f"Response rate, Strand {s}", "percent") for s in strands]
    spec += [
        ("cooperation_agreements_total", "", "Cooperation agreements signed", "count"),
        ("cooperation_agreements_mean", "", "Cooperation agreements per partnership (mean)", "number"),
        ("cooperation_agreements_median", "", "Cooperation agreements per partnership (median)", "number"),
        ("business_missions_planned_share", "", "Planning business missions beyond Europe", "percent"),
        ("sme_members_total", "", "SME members actively involved", "count"),
        ("sme_members_mean", "", "SME members per partnership (mean)", "number"),
        ("sme_members_median", "", "SME members per partnership (median)", "number"),
        ("markets_distinct", "", "Distinct markets selected", "count"),
        ("markets_new", "", "New markets (not selected the previous round)", "count"),
        ("markets_dropped", "", "Markets no longer selected", "count"),
        ("success_stories", "", "Success stories shared", "count"),
    ]
    for code in report.questionnaire.codes:
        if f"{code}_share" in set(report.table["indicator"]) and code not in ("business_missions_planned",):
            label = report.questionnaire.question(code).label
            spec.append((f"{code}_share", "", label, "percent"))
    rows = []
    for indicator, dimension, label, unit in spec:
        row = report.row(indicator, dimension)
        if row is None or (report.previous_year is None and indicator in ("markets_new", "markets_dropped")):
            continue
        cells = [Cell(label), Cell(_value_text(row, unit), "num")]
        if report.previous_year is not None:
            cells += [Cell(_value_text(row, unit, "previous_value", "previous_denominator"), "num"),
                      change_cell(row, unit=unit)]
        rows.append(tuple(cells))
    columns = [Cell("Indicator"), Cell(str(report.year), "num")]
    if report.previous_year is not None:
        columns += [Cell(str(report.previous_year), "num"), Cell("Change", "num")]
    note = "Percentages show their denominator: responding (or answering) partnerships."
    if report.previous_year is not None:
        note += " Percentage changes are given only on a base of at least " \
                f"{SMALL_BASE}; \u201cpts\u201d are percentage points."
    return Table("overview", "Overview", tuple(columns), tuple(rows), note)


def markets_table(report: IndicatorReport) -> Table | None:
    rows = report.rows(MARKET_INDICATOR)
    if rows.empty:
        return None
    has_previous = report.previous_year is not None
    columns = [Cell("Rank", "num"), Cell("Market"), Cell("Partnerships", "num"), Cell("Share of respondents", "num")]
    if has_previous:
        columns += [Cell(str(report.previous_year), "num"), Cell("Change", "num"),
                    Cell(f"Rank {report.previous_year}", "num"), Cell("Rank change", "num")]
    body = []
    for _, row in rows.iterrows():
        rank = _v(row["rank"])
        cells = [Cell("" if rank is None else str(int(rank)), "num"),
                 Cell(f"{country_name(str(row['key']))} ({row['key']})"),
                 Cell(number(_v(row["value"])), "num"),
                 Cell(rate(_v(row["value"]), _v(row["denominator"])), "num")]
        if has_previous:
            previous_rank = _v(row["previous_rank"])
            rank_change = _v(row["rank_change"])
            if rank_change is None:
                move = Cell("", "num")
            elif rank_change == 0:
                move = Cell("=", "num")
            else:
                arrow = "\u25b2" if rank_change > 0 else "\u25bc"
                move = Cell(f"{arrow} {abs(int(rank_change))}", "num up" if rank_change > 0 else "num down")
            cells += [Cell(_value_text(row, "count", "previous_value"), "num"), change_cell(row),
                      Cell("" if previous_rank is None else str(int(previous_rank)), "num"), move]
        body.append(tuple(cells))
    note = "Number of responding partnerships selecting each market; tied markets share a rank."
    return Table("markets", "Key markets", tuple(columns), tuple(body), note)


def sme_table(report: IndicatorReport) -> Table | None:
    rows = report.rows("sme_involvement")
    if rows.empty:
        return None
    question = report.questionnaire.question(str(rows["question"].iloc[0]))
    overall = rows[rows["strand"].isna()]
    strands = sorted(int(s) for s in rows["strand"].dropna().unique())
    by_key = {(str(r["key"]), None if pd.isna(r["strand"]) else int(r["strand"])): r for _, r in rows.iterrows()}
    any_row = overall.iloc[0]
    columns = [Cell("Activity")]
    for s in strands:
        n = next((r["denominator"] for k, r in by_key.items() if k[1] == s), None)
        columns.append(Cell(f"Strand {s} (n={number(_v(n))})", "num"))
    columns.append(Cell(f"All {report.year} (n={number(_v(any_row['denominator']))})", "num"))
    has_previous = report.previous_year is not None
    if has_previous:
        columns += [Cell(f"All {report.previous_year} (n={number(_v(any_row['previous_denominator']))})", "num"),
                    Cell("Change", "num")]
    body = []
    for option in (o.code for o in question.options or []) if isinstance(question.options, list) else []:
        total = by_key.get((option, None))
        if total is None:
            continue
        label = question.option_label(option)
        previous_code = question.previous_option_code(option)
        if previous_code != option:
            label += f" (was \u201c{previous_code}\u201d)"
        cells = [Cell(label)]
        cells += [Cell(number(_v(by_key[(option, s)]["value"])) if (option, s) in by_key else "", "num")
                  for s in strands]
        cells.append(Cell(number(_v(total["value"])), "num"))
        if has_previous:
            cells += [Cell(_value_text(total, "count", "previous_value"), "num"), change_cell(total)]
        body.append(tuple(cells))
    note = "Number of responding partnerships whose SME members take part in each activity (several answers)."
    return Table("sme", "SME involvement", tuple(columns), tuple(body), note)


def strand_table(report: IndicatorReport) -> Table:
    strands = sorted(int(s) for s in report.rows("responses")["strand"].dropna().unique())
    metrics = [
        ("responses", "Responses", "count"),
        ("response_rate", "Response rate", "percent"),
        ("cooperation_agreements_total", "Cooperation agreements", "count"),
        ("cooperation_agreements_mean", "Agreements per partnership (mean)", "number"),
        ("cooperation_agreements_median", "Agreements per partnership (median)", "number"),
        ("sme_members_total", "SME members", "count"),
        ("sme_members_mean", "SME members per partnership (mean)", "number"),
        ("sme_members_median", "SME members per partnership (median)", "number"),
    ]
    columns = [Cell("")] + [Cell(f"Strand {s}", "num") for s in strands] + [Cell("All", "num")]
    body = []
    for indicator, label, unit in metrics:
        cells = [Cell(label)]
        for dimension in [f"strand={s}" for s in strands] + [""]:
            row = report.row(indicator, dimension)
            cells.append(Cell("" if row is None else _value_text(row, unit), "num"))
        body.append(tuple(cells))
    return Table("strands", f"By strand, {report.year}", tuple(columns), tuple(body))


def key_figures(report: IndicatorReport) -> list[tuple[str, str]]:
    """The four figures a reader looks for first, each with what it counts and its change."""
    figures = []
    wanted = [("consulted", "partnerships consulted"), ("responses", "responses"),
              ("cooperation_agreements_total", "cooperation agreements"),
              ("business_missions_planned_yes", "planning business missions beyond Europe")]
    for indicator, label in wanted:
        row = report.row(indicator)
        if row is None:
            continue
        text = label
        if indicator == "responses":
            text += f", response rate {rate(_v(row['value']), _v(row['denominator']))}"
        elif indicator == "business_missions_planned_yes":
            text = f"of {number(_v(row['denominator']))} {label}"
        if report.previous_year is not None and _v(row["previous_value"]) is not None:
            text += f"; {number(_v(row['previous_value']))} in {report.previous_year}"
        figures.append((number(_v(row["value"])), text))
    return figures


def summary_context(report: IndicatorReport) -> SummaryContext:
    """Everything the summary templates show, formatted and ordered."""
    charts = []
    markets = report.rows(MARKET_INDICATOR)
    has_previous = report.previous_year is not None
    if not markets.empty:
        items = [(country_name(str(r["key"])), float(r["value"]),
                  _v(r["previous_value"]) if has_previous else None) for _, r in markets.iterrows()]
        charts.append(bar_chart("chart-markets", "Key markets", "Number of responding partnerships selecting "
                                "each market", items, year=report.year, previous_year=report.previous_year))
    sme = report.rows("sme_involvement")
    if not sme.empty:
        question = report.questionnaire.question(str(sme["question"].iloc[0]))
        for strand, strand_rows in sme[sme["strand"].notna()].groupby("strand", sort=True):
            items = [(question.option_label(str(r["key"])), float(r["value"]),
                      (_v(r["previous_value"]) if r["comparison"] != "new" else None) if has_previous else None)
                     for _, r in strand_rows.iterrows()]
            n = number(_v(strand_rows["denominator"].iloc[0]))
            charts.append(bar_chart(f"chart-sme-{strand}", f"SME involvement, Strand {strand}",
                                    f"Number of Strand {strand} partnerships (of {n} responding) whose SMEs take "
                                    "part in each activity", items, year=report.year,
                                    previous_year=report.previous_year))
    tables = [t for t in (overview_table(report), markets_table(report), sme_table(report), strand_table(report))
              if t is not None]
    stories = [
        {"text": story.text,
         "by": f"{story.partnership_name}" + (f" ({story.acronym})" if story.acronym else ""),
         "strand": "" if story.strand is None else f"Strand {story.strand}"}
        for story in report.stories
    ]
    consulted = report.value("consulted")
    responses = report.value("responses")
    lead = (f"Results of the {report.year} consultation: {count(responses, 'response')} from "
            f"{count(consulted, 'partnership')} consulted.")
    return SummaryContext(
        year=report.year,
        previous_year=report.previous_year,
        title=f"Consultation {report.year}: summary of results",
        lead=lead,
        key_figures=key_figures(report),
        paragraphs=build_narrative(report),
        charts=charts,
        tables=tables,
        stories=stories,
    )


# --------------------------------------------------------------------------------------------------------------
# Rendering


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#&])")


def markdown_escape(text: object) -> str:
    """Text shown as text in Markdown (and in the Prefect UI): no markup, no raw HTML, no table breaks."""
    escaped = _MD_SPECIAL.sub(r"\\\1", str(text))
    return " ".join(escaped.splitlines())  # every line break (lone CR, U+2028...) becomes a space


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=lambda name: bool(name) and name.endswith((".html.j2", ".html")),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = markdown_escape
    return env


def render_html(context: SummaryContext) -> str:
    return environment().get_template("summary.html.j2").render(s=context)


def render_markdown(context: SummaryContext) -> str:
    return environment().get_template("summary.md.j2").render(s=context)


def _csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


_TEXT_COLUMNS = {"indicator", "dimension", "comparison", "key"}


def indicators_csv(report: IndicatorReport) -> str:
    """The indicator table: ``round_year,indicator,dimension,value,previous_value,change`` then details."""
    rows = [list(TABLE_COLUMNS)]
    for record in report.records():
        rows.append([
            neutralise_cell("" if record[c] is None else str(record[c])) if c in _TEXT_COLUMNS
            else format_number(record[c]) if c != "round_year" else str(record[c])
            for c in TABLE_COLUMNS
        ])
    return _csv(rows)


def stories_csv(report: IndicatorReport) -> str:
    rows = [["round_year", "partnership_id", "partnership", "acronym", "strand", "story"]]
    for story in report.stories:
        cells = [story.partnership_code, story.partnership_name, story.acronym or "",
                 "" if story.strand is None else str(story.strand), story.text]
        rows.append([str(report.year), *[neutralise_cell(c) for c in cells]])
    return _csv(rows)


# --------------------------------------------------------------------------------------------------------------
# Writing and recording


@dataclass(frozen=True)
class PublishResult:
    year: int
    directory: Path
    html: Path
    markdown: Path
    csv: Path
    stories_csv: Path
    files: dict[str, str]  # file name -> sha256
    content_sha256: str
    publication_id: int
    markdown_text: str = field(repr=False, default="")

    @property
    def paths(self) -> list[Path]:
        return [self.html, self.markdown, self.csv, self.stories_csv]

    def paths_by_label(self) -> dict[str, str]:
        return {
            "summary (HTML)": str(self.html),
            "summary (Markdown)": str(self.markdown),
            "indicators (CSV)": str(self.csv),
            "success stories (CSV)": str(self.stories_csv),
        }


def _write_atomically(path: Path, text: str) -> str:
    data = text.encode("utf-8")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def render_files(report: IndicatorReport) -> dict[str, str]:
    """File name -> content, for every published file of the round."""
    context = summary_context(report)
    year = report.year
    return {
        f"summary-{year}.html": render_html(context),
        f"summary-{year}.md": render_markdown(context),
        f"indicators-{year}.csv": indicators_csv(report),
        f"stories-{year}.csv": stories_csv(report),
    }


def publish_report(session: Session, report: IndicatorReport, out_dir: Path, *,
                   flow_run_id: str | None = None) -> PublishResult:
    """Write the round's files under ``out_dir/YEAR/`` and record the publication (hashes, flow run)."""
    round_ = get_round(session, report.year)
    directory = out_dir / str(report.year)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConsultError(f"{directory}: cannot create the output folder ({error.strerror})") from None
    contents = render_files(report)
    files = {name: _write_atomically(directory / name, text) for name, text in contents.items()}
    content_sha256 = hashlib.sha256("".join(f"{n}:{h}\n" for n, h in sorted(files.items())).encode()).hexdigest()
    publication = Publication(round_id=round_.id, output_dir=str(directory.resolve()), files=files,
                              content_sha256=content_sha256, flow_run_id=flow_run_id)
    session.add(publication)
    if round_.status == "closed":
        round_.status = "published"
    session.flush()
    year = report.year
    return PublishResult(
        year=year,
        directory=directory,
        html=directory / f"summary-{year}.html",
        markdown=directory / f"summary-{year}.md",
        csv=directory / f"indicators-{year}.csv",
        stories_csv=directory / f"stories-{year}.csv",
        files=files,
        content_sha256=content_sha256,
        publication_id=publication.id,
        markdown_text=contents[f"summary-{year}.md"],
    )
