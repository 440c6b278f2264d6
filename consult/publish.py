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
from consult.indicators import TABLE_COLUMNS, IndicatorReport, format_number
from consult.narrative import (
    SMALL_BASE,
    Paragraph,
    build_narrative,
    count,
    group_label,
    lower_first,
    number,
    option_name,
    percent,
    question_title,
    rate,
)
from consult.questionnaire import ISO3166, Question, country_name
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
    quotes: list[dict[str, object]]  # per free-text question: title, id, items (text, by, group)
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


def _overview_default(report: IndicatorReport) -> list[tuple[str | None, str]]:
    """(question, stat) of the overview rows when the questionnaire does not list them: a headline figure or
    three per question, in questionnaire order."""
    wanted: list[tuple[str | None, str]] = [(None, "consulted"), (None, "responses"), (None, "response_rate")]
    headline = {"multi_select": ("distinct", "new", "dropped"), "single_select": ("new", "dropped"),
                "yes_no": ("yes_share",), "integer": ("sum", "mean", "median"), "number": ("sum", "mean", "median"),
                "scale": ("mean", "median"), "text": ("answered",)}
    for question in report.questionnaire.questions:  # a matrix has its own table, not overview rows
        wanted += [(question.code, stat) for stat in headline.get(question.kind, ())]
    return wanted


def _label(row: pd.Series) -> str:
    return str(row["label"]) if isinstance(row["label"], str) else str(row["indicator"])


def overview_table(report: IndicatorReport) -> Table:
    respondent = report.questionnaire.respondent
    section = report.questionnaire.indicators
    rows_wanted: list[pd.Series] = []
    if section is not None and section.overview is not None:
        for name in section.overview:
            found = report.row(name)
            if found is not None:
                rows_wanted.append(found)
    else:
        for question, stat in _overview_default(report):
            found = report.stat_row(question, stat)
            if found is not None:
                rows_wanted.append(found)
    # The response rate of each breakdown group, after the overall one.
    position = next((i + 1 for i, r in enumerate(rows_wanted) if r["stat"] == "response_rate"), len(rows_wanted))
    groups = report.stat_rows(None, "response_rate")
    group_rows = [r for _, r in groups[groups["group"] != ""].iterrows()]
    rows_wanted[position:position] = group_rows
    rows = []
    for row in rows_wanted:
        if row["hidden"] or (report.previous_year is None and row["stat"] in ("new", "dropped")):
            continue
        unit = str(row["unit"]) if isinstance(row["unit"], str) else "count"
        label = _label(row)
        if row["group"]:
            label += f", {group_label(report, str(row['group']))}"
        cells = [Cell(label), Cell(_value_text(row, unit), "num")]
        if report.previous_year is not None:
            cells += [Cell(_value_text(row, unit, "previous_value", "previous_denominator"), "num"),
                      change_cell(row, unit=unit)]
        rows.append(tuple(cells))
    columns = [Cell("Indicator"), Cell(str(report.year), "num")]
    if report.previous_year is not None:
        columns += [Cell(str(report.previous_year), "num"), Cell("Change", "num")]
    note = f"Percentages show their denominator: responding (or answering) {respondent.plural}."
    if report.previous_year is not None:
        note += " Percentage changes are given only on a base of at least " \
                f"{SMALL_BASE}; \u201cpts\u201d are percentage points."
    return Table("overview", "Overview", tuple(columns), tuple(rows), note)


def _option_text(question: Question, code: str) -> str:
    if question.options == ISO3166:
        return f"{country_name(code)} ({code})"
    return option_name(question, code, article=False)


def matrix_table(report: IndicatorReport, question: Question) -> Table | None:
    """A matrix question as one small table: a line per row, a column per answer (its options, or its scale's
    values), each cell the respondents choosing it and their share of those answering the row; the mean for a
    scale."""
    rows = question.answer_fields()[: len(question.rows or [])]
    if not rows:
        return None
    first = rows[0]
    answers = ([option.code for option in question.options] if isinstance(question.options, list)
               else [str(value) for value in first.scale_values])
    is_scale = first.kind == "scale"
    respondent = report.questionnaire.respondent
    columns = [Cell("")] + [Cell(_option_text(first, answer), "num") for answer in answers]
    columns += [Cell("Answering", "num")] + ([Cell("Mean", "num")] if is_scale else [])
    body = []
    for row_question, row in zip(rows, question.rows or [], strict=True):
        counts = report.stat_rows(row_question.code, "count")
        counts = counts[counts["group"] == ""]
        by_answer = {str(r["key"]): r for _, r in counts.iterrows()}
        answering = next((_v(r["denominator"]) for r in by_answer.values()), None)
        cells = [Cell(row.label)]
        for answer in answers:
            found = by_answer.get(answer)
            value = _v(found["value"]) if found is not None else 0.0
            cells.append(Cell(f"{number(value)} ({rate(value, answering)})" if answering else number(value), "num"))
        cells.append(Cell(number(answering) if answering is not None else "0", "num"))
        if is_scale:
            mean = report.stat_row(row_question.code, "mean")
            cells.append(Cell("" if mean is None else _value_text(mean, "number"), "num"))
        body.append(tuple(cells))
    return Table(f"matrix-{question.code}", question_title(report, question), tuple(columns), tuple(body),
                 f"Number of responding {respondent.plural} choosing each answer, and their share of those "
                 "answering the row.")


def options_table(report: IndicatorReport, question: Question) -> Table | None:
    """A select or scale question's options: respondents choosing each, share, rank (selects) and changes."""
    rows = report.stat_rows(question.code, "count")
    rows = rows[rows["group"] == ""]
    if rows.empty:
        return None
    respondent = report.questionnaire.respondent
    has_previous = report.previous_year is not None
    is_select = question.is_select
    columns = ([Cell("Rank", "num")] if is_select else []) + [
        Cell("Answer"), Cell(respondent.plural.capitalize(), "num"), Cell("Share of those answering", "num")]
    if has_previous:
        columns += [Cell(str(report.previous_year), "num"), Cell("Change", "num")]
        if is_select:
            columns += [Cell(f"Rank {report.previous_year}", "num"), Cell("Rank change", "num")]
    body = []
    for _, row in rows.iterrows():
        rank = _v(row["rank"])
        cells = [Cell("" if rank is None else str(int(rank)), "num")] if is_select else []
        label = _option_text(question, str(row["key"]))
        previous_code = question.previous_option_code(str(row["key"])) if is_select else str(row["key"])
        if previous_code != str(row["key"]):
            label += f" (was \u201c{previous_code}\u201d)"
        cells += [Cell(label), Cell(number(_v(row["value"])), "num"),
                  Cell(rate(_v(row["value"]), _v(row["denominator"])), "num")]
        if has_previous:
            cells += [Cell(_value_text(row, "count", "previous_value"), "num"), change_cell(row)]
            if is_select:
                previous_rank = _v(row["previous_rank"])
                rank_change = _v(row["rank_change"])
                if rank_change is None:
                    move = Cell("", "num")
                elif rank_change == 0:
                    move = Cell("=", "num")
                else:
                    arrow = "\u25b2" if rank_change > 0 else "\u25bc"
                    move = Cell(f"{arrow} {abs(int(rank_change))}", "num up" if rank_change > 0 else "num down")
                cells += [Cell("" if previous_rank is None else str(int(previous_rank)), "num"), move]
        body.append(tuple(cells))
    note = f"Number of responding {respondent.plural} choosing each answer"
    note += "; tied answers share a rank." if is_select else "."
    return Table(f"options-{question.code}", question_title(report, question), tuple(columns), tuple(body), note)


def options_by_group_table(report: IndicatorReport, question: Question, attribute: str) -> Table | None:
    """A select or scale question's options (rows) by the groups of one breakdown attribute (columns)."""
    rows = report.stat_rows(question.code, "count")
    if rows.empty:
        return None
    respondent = report.questionnaire.respondent
    overall = rows[rows["group"] == ""]
    in_groups = rows[rows["group"].str.startswith(attribute + "=")]
    groups = list(dict.fromkeys(in_groups["group"]))
    if not groups or overall.empty:
        return None
    by_key = {(str(r["key"]), str(r["group"])): r for _, r in rows.iterrows()}
    any_row = overall.iloc[0]
    columns = [Cell("Answer")]
    for group in groups:
        n = next((r["denominator"] for k, r in by_key.items() if k[1] == group), None)
        columns.append(Cell(f"{group_label(report, group)} (n={number(_v(n))})", "num"))
    columns.append(Cell(f"All {report.year} (n={number(_v(any_row['denominator']))})", "num"))
    has_previous = report.previous_year is not None
    if has_previous:
        columns += [Cell(f"All {report.previous_year} (n={number(_v(any_row['previous_denominator']))})", "num"),
                    Cell("Change", "num")]
    body = []
    for _, total in overall.sort_values("position", kind="stable").iterrows():
        option = str(total["key"])
        label = _option_text(question, option)
        previous_code = question.previous_option_code(option) if question.is_select else option
        if previous_code != option:
            label += f" (was \u201c{previous_code}\u201d)"
        cells = [Cell(label)]
        cells += [Cell(number(_v(by_key[(option, g)]["value"])) if (option, g) in by_key else "", "num")
                  for g in groups]
        cells.append(Cell(number(_v(total["value"])), "num"))
        if has_previous:
            cells += [Cell(_value_text(total, "count", "previous_value"), "num"), change_cell(total)]
        body.append(tuple(cells))
    note = f"Number of responding {respondent.plural} choosing each answer, by {attribute}."
    return Table(f"options-{question.code}-{attribute}", f"{question_title(report, question)}, by {attribute}",
                 tuple(columns), tuple(body), note)


def breakdown_table(report: IndicatorReport, attribute: str) -> Table | None:
    """One breakdown attribute: participation and each question's headline figures, per group and overall."""
    responses = report.stat_rows(None, "responses")
    groups = [g for g in dict.fromkeys(responses["group"]) if g.startswith(attribute + "=")]
    if not groups:
        return None
    metrics: list[tuple[str | None, str]] = [(None, "responses"), (None, "response_rate")]
    headline = {"yes_no": ("yes_share",), "integer": ("sum", "mean", "median"), "number": ("sum", "mean", "median"),
                "scale": ("mean", "median"), "text": ("answered",)}
    for question in report.questionnaire.questions:
        metrics += [(question.code, stat) for stat in headline.get(question.kind, ())]
    columns = [Cell("")] + [Cell(group_label(report, g), "num") for g in groups] + [Cell("All", "num")]
    body = []
    for question, stat in metrics:
        overall = report.stat_row(question, stat)
        if overall is None or overall["hidden"]:
            continue
        unit = str(overall["unit"])
        cells = [Cell(_label(overall))]
        for dimension in [*groups, ""]:
            row = report.stat_row(question, stat, dimension)
            cells.append(Cell("" if row is None else _value_text(row, unit), "num"))
        body.append(tuple(cells))
    return Table(f"by-{attribute}", f"By {attribute}, {report.year}", tuple(columns), tuple(body))


def key_figures(report: IndicatorReport) -> list[tuple[str, str]]:
    """The figures a reader looks for first, each with what it counts and its change: those the questionnaire
    names (``indicators.key_figures``), else participation and the first total and yes/no question."""
    respondent = report.questionnaire.respondent
    section = report.questionnaire.indicators
    if section is not None and section.key_figures is not None:
        rows = [report.row(name) for name in section.key_figures]
    else:
        rows = [report.stat_row(None, "consulted"), report.stat_row(None, "responses")]
        for stat in ("sum", "yes"):
            found = report.table[(report.table["stat"] == stat) & (report.table["dimension"] == "")]
            rows.append(None if found.empty else found.iloc[0])
    figures = []
    for row in rows:
        if row is None:
            continue
        stat = str(row["stat"])
        question = report.questionnaire.question(str(row["question"])) if isinstance(row["question"], str) else None
        if stat == "consulted":
            text = f"{respondent.plural} consulted"
        elif stat == "responses":
            text = f"responses, response rate {rate(_v(row['value']), _v(row['denominator']))}"
        elif stat == "yes":
            text = f"of {number(_v(row['denominator']))} {lower_first(_label(row))}"
        elif question is not None and stat == "sum":
            wording = report.questionnaire.wording(question.code)
            text = wording.units or (wording.unit + "s" if wording.unit else lower_first(_label(row)))
        else:
            text = lower_first(_label(row))
        if report.previous_year is not None and _v(row["previous_value"]) is not None:
            text += f"; {number(_v(row['previous_value']))} in {report.previous_year}"
        figures.append((number(_v(row["value"])), text))
    return figures


def _charts(report: IndicatorReport) -> list[Chart]:
    """A chart for each select and scale question (one per group of the first breakdown attribute when the
    question is worded by group), this round beside the previous one."""
    respondent = report.questionnaire.respondent
    has_previous = report.previous_year is not None
    charts = []
    for question in report.questionnaire.questions:
        if not (question.is_select or question.kind == "scale"):
            continue
        wording = report.questionnaire.wording(question.code)
        if not wording.chart:
            continue
        rows = report.stat_rows(question.code, "count")
        attributes = report.questionnaire.breakdown_by
        title = question_title(report, question)

        def items(frame: pd.DataFrame, question: Question = question) -> list[tuple[str, float, float | None]]:
            if question.is_select and question.options == ISO3166:
                frame = frame[frame["value"] > 0]
            return [(option_name(question, str(r["key"]), article=False), float(r["value"]),
                     (_v(r["previous_value"]) if r["comparison"] != "new" else None) if has_previous else None)
                    for _, r in frame.iterrows()]

        if wording.style == "by_group" and attributes:
            grouped = rows[rows["group"].str.startswith(attributes[0] + "=")]
            for group, group_rows in grouped.groupby("group", sort=False):
                n = number(_v(group_rows["denominator"].iloc[0]))
                label = group_label(report, str(group))
                charts.append(bar_chart(
                    f"chart-{question.code}-{str(group).partition('=')[2]}", f"{title}, {label}",
                    f"Number of {label} {respondent.plural} (of {n} responding) choosing each answer",
                    items(group_rows), year=report.year, previous_year=report.previous_year))
            continue
        overall = rows[rows["group"] == ""]
        if overall.empty:
            continue
        charts.append(bar_chart(f"chart-{question.code}", title,
                                f"Number of responding {respondent.plural} choosing each answer", items(overall),
                                year=report.year, previous_year=report.previous_year))
    return charts


def summary_context(report: IndicatorReport) -> SummaryContext:
    """Everything the summary templates show, formatted and ordered."""
    questionnaire = report.questionnaire
    tables: list[Table | None] = [overview_table(report)]
    for question in questionnaire.questions:
        if question.kind == "matrix":
            tables.append(matrix_table(report, question))
        if question.is_select or question.kind == "scale":
            tables.append(options_table(report, question))
            tables += [options_by_group_table(report, question, attribute) for attribute in questionnaire.breakdown_by]
    tables += [breakdown_table(report, attribute) for attribute in questionnaire.breakdown_by]
    quotes = []
    for question in questionnaire.questions:
        if question.kind != "text":
            continue
        items = [
            {"text": story.text,
             "by": f"{story.partnership_name}" + (f" ({story.acronym})" if story.acronym else ""),
             "group": ", ".join(group_label(report, f"{a}={story.attributes[a]}") for a in questionnaire.breakdown_by
                                if story.attributes.get(a))}
            for story in report.stories if story.question == question.code
        ]
        if items:
            quotes.append({"title": question_title(report, question), "id": question.code, "items": items})
    consulted = report.value("consulted")
    responses = report.value("responses")
    respondent = questionnaire.respondent
    lead = (f"Results of the {report.year} consultation: {count(responses, 'response')} from "
            f"{count(consulted, respondent.singular, respondent.plural)} consulted.")
    return SummaryContext(
        year=report.year,
        previous_year=report.previous_year,
        title=f"Consultation {report.year}: summary of results",
        lead=lead,
        key_figures=key_figures(report),
        paragraphs=build_narrative(report),
        charts=_charts(report),
        tables=[t for t in tables if t is not None],
        quotes=quotes,
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


_TEXT_COLUMNS = {"indicator", "dimension", "comparison", "key", "group"}


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
    """Every free-text answer as written: who gave it, its breakdown attributes and the question."""
    attributes = list(report.questionnaire.breakdown_by)
    rows = [["round_year", "partnership_id", "partnership", "acronym", *attributes, "question", "story"]]
    for story in report.stories:
        cells = [story.partnership_code, story.partnership_name, story.acronym or "",
                 *[story.attributes.get(a, "") for a in attributes], story.question, story.text]
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
            "free-text answers (CSV)": str(self.stories_csv),
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
