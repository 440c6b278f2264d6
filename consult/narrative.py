"""The summary's narrative, written from the indicators in the register of the ECCP's published report, for
any questionnaire: a paragraph per question (or per ``section`` of questions) in questionnaire order.

"The United States of America is the most selected market (8 partnerships); Canada and Japan share second place
(7 partnerships each)". Rules: option names come from the questionnaire (country names from their codes), ties
are worded as ties, every percentage carries its denominator, and a change on a small base is worded as counts
("14 of 20, against 12 of 19 in 2019") rather than as a percentage that would overstate it. Respondents are
called what the questionnaire calls them (``respondent:``); a question's ``indicators.wording`` may give its
title, the noun of its answers and a sentence template whose fields are listed by kind below.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from itertools import groupby

import pandas as pd

from consult.indicators import IndicatorReport
from consult.questionnaire import ISO3166, Question, QuestionWording, country_name

# Below this many respondents, a change is worded as counts, not as a percentage change.
SMALL_BASE = 30
# The ranked sentence names rank groups until at least this many options are named.
MARKETS_NAMED = 8

_ORDINALS = ["", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]
_NAMES_WITH_ARTICLE = {"Netherlands", "Philippines", "Bahamas", "Gambia", "Maldives", "Comoros", "Seychelles",
                       "Holy See", "Vatican"}


@dataclass(frozen=True)
class Paragraph:
    topic: str
    title: str
    text: str
    bullets: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------------------
# Wording helpers


def missing(value: object) -> bool:
    """None, NaN and pandas' NA alike: a figure that cannot be stated."""
    return value is None or bool(pd.isna(value))  # type: ignore[arg-type]


def count(n: float | None, noun: str, plural: str | None = None) -> str:
    """``1 partnership``, ``8 partnerships``, ``1,024 partnerships``."""
    if missing(n):
        return f"no {plural or noun + 's'}"
    value = round(n)  # type: ignore[arg-type]
    return f"{value:,} {noun if value == 1 else (plural or noun + 's')}"


def number(value: float | None) -> str:
    """Integers without decimals, other numbers with up to two."""
    if missing(value):
        return "n/a"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def percent(value: float | None) -> str:
    return "n/a" if missing(value) else f"{value:.1f}%"


def share(part: float | None, whole: float | None) -> str:
    """A percentage always with its denominator: ``12 of 19 (63.2%)``."""
    if missing(part) or missing(whole) or not whole:
        return "n/a"
    return f"{round(part):,} of {round(whole):,} ({100.0 * part / whole:.1f}%)"


def rate(part: float | None, whole: float | None) -> str:
    """A rate first, then its denominator: ``82.6% (19 of 23)``."""
    if missing(part) or missing(whole) or not whole:
        return "n/a"
    return f"{100.0 * part / whole:.1f}% ({round(part):,} of {round(whole):,})"


def join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def ordinal(n: int) -> str:
    if n < len(_ORDINALS):
        return _ORDINALS[n]
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def place(n: int) -> str:
    """``1st``, ``2nd``, ``12th`` for rank changes."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def market_name(code: str, *, article: bool = True) -> str:
    """Country name as the report writes it in a sentence: "the United States of America", "Japan"."""
    name = country_name(code)
    needs_article = (
        name.startswith(("United ", "Republic ", "Russian Federation", "Czech Republic"))
        or name.endswith((" Republic", " Islands", " Emirates", " Kingdom"))
        or name in _NAMES_WITH_ARTICLE
    )
    return f"the {name}" if article and needs_article else name


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def lower_first(label: str) -> str:
    """``Knowledge sharing`` -> ``knowledge sharing``, leaving acronyms (``EU calls``) alone."""
    if len(label) > 1 and label[1].isupper():
        return label
    return label[:1].lower() + label[1:]


def _value(row: pd.Series | None, column: str = "value") -> float | None:
    if row is None:
        return None
    value = row[column]
    return None if value is None or pd.isna(value) else float(value)


def change_in_counts(current: float | None, previous: float | None, year: int | None, noun: str) -> str:
    """``9 more than in 2019 (21)`` / ``2 fewer than in 2019 (30)`` / ``as many as in 2019``."""
    if current is None or previous is None or year is None:
        return ""
    difference = current - previous
    if difference == 0:
        return f"the same as in {year}"
    more = "more" if difference > 0 else "fewer"
    text = f"{number(abs(difference))} {more} than in {year} ({number(previous)})"
    if previous >= SMALL_BASE:
        text += f", {difference / previous * 100:+.1f}%"
    return text


def change_in_share(part: float | None, whole: float | None, prev_part: float | None, prev_whole: float | None,
                    year: int | None) -> str:
    """On a small base, both shares as counts; on a large one, the change in percentage points."""
    if None in (part, whole, prev_part, prev_whole) or year is None or not whole or not prev_whole:
        return ""
    assert part is not None and whole is not None and prev_part is not None and prev_whole is not None
    if min(whole, prev_whole) < SMALL_BASE:
        return f"against {share(prev_part, prev_whole)} in {year}"
    points = 100.0 * (part / whole - prev_part / prev_whole)
    direction = "up" if points > 0 else "down"
    if abs(points) < 0.05:
        return f"unchanged from {year} ({share(prev_part, prev_whole)})"
    return f"{direction} {abs(points):.1f} percentage points from {share(prev_part, prev_whole)} in {year}"


# --------------------------------------------------------------------------------------------------------------
# Naming things as the questionnaire and the panel do


class _Fields(dict):  # type: ignore[type-arg]
    """Template fields; a field the template names and the engine does not fill is left visible, not an error."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, fields: dict[str, str]) -> str:
    return string.Formatter().vformat(template, (), _Fields(fields))


def group_label(report: IndicatorReport, group: str) -> str:
    """``size=large`` -> ``large``, or as the questionnaire's ``breakdown_labels`` word it (``Size: large``)."""
    attribute, _, value = group.partition("=")
    section = report.questionnaire.indicators
    template = section.breakdown_labels.get(attribute) if section else None
    return template.replace("{value}", value) if template else value


def option_name(question: Question, code: str, *, article: bool = True) -> str:
    """An option as a sentence names it: a country with the article English needs, else its label."""
    if question.options == ISO3166:
        return market_name(code, article=article)
    if question.kind == "scale":
        return question.scale_label(int(code))
    return question.option_label(code)


def _nouns(wording: QuestionWording, default: str) -> tuple[str, str]:
    singular = wording.noun or default
    return singular, wording.nouns or (singular + "s")


def _units(wording: QuestionWording) -> tuple[str, str] | None:
    if not wording.unit:
        return None
    return wording.unit, wording.units or wording.unit + "s"


def _counted(n: float | None, units: tuple[str, str] | None) -> str:
    return count(n, *units) if units else number(n)


# --------------------------------------------------------------------------------------------------------------
# Paragraphs


def build_narrative(report: IndicatorReport) -> list[Paragraph]:
    """Participation, then each question in questionnaire order; questions sharing a ``section`` share one
    paragraph."""
    paragraphs = [participation(report)]
    pending: tuple[str, list[str]] | None = None  # (section title, sentences)
    for question in report.questionnaire.questions:
        wording = report.questionnaire.wording(question.code)
        produced = question_paragraphs(report, question)
        if wording.section:
            text = " ".join(p.text for p in produced if p.text)
            if pending is not None and pending[0] == wording.section:
                pending[1].append(text)
            else:
                if pending is not None:
                    paragraphs.append(Paragraph("section", pending[0], " ".join(t for t in pending[1] if t)))
                pending = (wording.section, [text])
            continue
        if pending is not None:
            paragraphs.append(Paragraph("section", pending[0], " ".join(t for t in pending[1] if t)))
            pending = None
        paragraphs += produced
    if pending is not None:
        paragraphs.append(Paragraph("section", pending[0], " ".join(t for t in pending[1] if t)))
    return [p for p in paragraphs if p.text or p.bullets]


def question_paragraphs(report: IndicatorReport, question: Question) -> list[Paragraph]:
    if question.is_select:
        if report.questionnaire.wording(question.code).style == "by_group":
            return by_group(report, question)
        return ranked(report, question)
    if question.kind == "matrix":  # its rows, each worded like the select or scale question it is
        return [paragraph for row in question.answer_fields()[: len(question.rows or [])]
                for paragraph in question_paragraphs(report, row)]
    builders = {"yes_no": yes_no, "integer": numbers, "number": numbers, "scale": scale, "text": free_text}
    paragraph = builders[question.kind](report, question)
    return [paragraph] if paragraph is not None else []


def question_title(report: IndicatorReport, question: Question) -> str:
    return report.questionnaire.wording(question.code).title or question.label


def _is_new(report: IndicatorReport, question: Question) -> bool:
    return report.previous_year is not None and question.code in report.new_questions


def _new_note(report: IndicatorReport) -> str:
    return f" It was not asked in {report.previous_year}, so there is no change to report."


def participation(report: IndicatorReport) -> Paragraph:
    respondent = report.questionnaire.respondent
    consulted = report.value("consulted")
    responses = report.value("responses")
    groups = []
    attributes = report.questionnaire.breakdown_by
    if attributes:
        rows = report.stat_rows(None, "responses")
        for row in rows[rows["group"].str.startswith(attributes[0] + "=")].itertuples():
            of = "all" if row.value == row.denominator else f"{number(row.value)} of the"
            groups.append(f"{of} {number(row.denominator)} {group_label(report, row.group)} {respondent.plural}")
    text = (
        f"The {number(consulted)} {respondent.plural} of the panel were consulted and "
        f"{count(responses, 'response')} were collected, a response rate of {rate(responses, consulted)}"
    )
    text += f": {join(groups)} responded." if groups else "."
    previous = report.stat_row(None, "responses")
    if report.previous_year is not None and _value(previous, "previous_value") is not None:
        text += (
            f" In {report.previous_year}, {number(_value(previous, 'previous_value'))} of "
            f"{number(_value(previous, 'previous_denominator'))} {respondent.plural} had responded."
        )
    return Paragraph("participation", "Participation", text)


# --- select questions ------------------------------------------------------------------------------------------


def _rank_groups(rows: pd.DataFrame, question: Question) -> list[tuple[int, float, list[str]]]:
    """Ranked options grouped by shared rank; names within a group in alphabetical order."""
    ranked_rows = rows[rows["rank"].notna()].copy()
    ranked_rows["name"] = [option_name(question, str(code), article=False) for code in ranked_rows["key"]]
    ranked_rows = ranked_rows.sort_values(["rank", "name"])
    groups = []
    for rank, members in groupby(ranked_rows.itertuples(), key=lambda r: int(r.rank)):
        members = list(members)
        groups.append((rank, float(members[0].value), [str(m.key) for m in members]))
    return groups


# The ranked sentence names rank groups until at least this many options are named.
OPTIONS_NAMED = MARKETS_NAMED


def ranked(report: IndicatorReport, question: Question) -> list[Paragraph]:
    """"X is the most selected market (8 partnerships); Y and Z share second place (7 partnerships each) ..."."""
    respondent = report.questionnaire.respondent
    wording = report.questionnaire.wording(question.code)
    noun, nouns = _nouns(wording, "option")
    rows = report.stat_rows(question.code, "count")
    overall = rows[rows["group"] == ""]
    groups = _rank_groups(overall, question)
    title = question_title(report, question)
    if not groups:
        return [Paragraph(question.code, title, f"No {nouns} were selected.")]

    def names(codes: list[str]) -> str:
        return join([option_name(question, code) for code in codes])

    def each(n: float, codes: list[str]) -> str:
        return f"{count(n, respondent.singular, respondent.plural)}{' each' if len(codes) > 1 else ''}"

    named: list[tuple[int, float, list[str]]] = []
    for group in groups:
        if sum(len(g[2]) for g in named) >= OPTIONS_NAMED:
            break
        named.append(group)
    rank, value, codes = named[0]
    if len(codes) == 1:
        text = f"{capitalise(names(codes))} is the most selected {noun} ({each(value, codes)})"
    else:
        text = f"{capitalise(names(codes))} are the most selected {nouns} ({each(value, codes)})"
    if len(named) > 1:
        rank, value, codes = named[1]
        if len(codes) == 1:
            text += f", {names(codes)} the {ordinal(rank)} ({each(value, codes)})"
        else:
            text += f"; {names(codes)} share {ordinal(rank)} place ({each(value, codes)})"
    rest = [f"{names(codes)} ({each(value, codes)})" for _rank, value, codes in named[2:]]
    if rest:
        text += ", followed by " + join(rest)
    text += "."
    distinct = report.stat_row(question.code, "distinct")
    selections = report.stat_row(question.code, "selections")
    if distinct is not None and selections is not None:
        text += (
            f" In all, {count(_value(distinct), noun, nouns)} were selected ({count(_value(selections), 'selection')} "
            f"by {count(_value(selections, 'denominator'), 'responding ' + respondent.singular, 'responding ' + respondent.plural)})."
        )
    others = groups[len(named):]
    if others:
        text += (f" No other {noun} was selected by more than "
                 f"{count(others[0][1], respondent.singular, respondent.plural)}.")
    elif distinct is None:
        base = _value(overall.iloc[0], "denominator") if not overall.empty else None
        text += f" Base: {count(base, 'responding ' + respondent.singular, 'responding ' + respondent.plural)}."
    if _is_new(report, question):
        text += _new_note(report)
    paragraph = Paragraph(question.code, title, text.strip())
    if report.previous_year is None or _is_new(report, question):
        return [paragraph]
    changes = _option_changes(report, question, overall, noun, nouns)
    return [paragraph, Paragraph(question.code, "", changes)] if changes else [paragraph]


def _option_changes(report: IndicatorReport, question: Question, rows: pd.DataFrame, noun: str, nouns: str) -> str:
    respondent = report.questionnaire.respondent
    year = report.previous_year
    sentences = []

    def names(codes: list[str]) -> str:
        return join([option_name(question, code) for code in codes])

    def counted(n: float | None) -> str:
        return count(n, respondent.singular, respondent.plural)

    top_now = rows[rows["rank"] == 1]
    top_before = rows[rows["previous_rank"] == 1]
    now_codes = sorted(str(c) for c in top_now["key"])
    before_codes = sorted(str(c) for c in top_before["key"])
    if now_codes and now_codes == before_codes:
        parts = []
        for _, r in top_now.iterrows():
            now, before = _value(r), _value(r, "previous_value")
            trend = f"as in {year}" if now == before else f"{'up' if (now or 0) > (before or 0) else 'down'} from " \
                f"{number(before)}"
            parts.append(f"{counted(now)}, {trend}")
        verb = "remains" if len(now_codes) == 1 else "remain"
        sentences.append(f"Compared with {year}, {names(now_codes)} {verb} the most selected ({'; '.join(parts)}).")
    elif now_codes and before_codes:
        sentences.append(f"Compared with {year}, {names(now_codes)} "
                         f"{'has' if len(now_codes) == 1 else 'have'} replaced {names(before_codes)} "
                         f"as the most selected.")
    movers = rows[rows["rank_change"].notna() & (rows["rank_change"] != 0)].copy()
    movers["size"] = movers["rank_change"].abs()
    ups = movers[movers["rank_change"] > 0].sort_values(["size", "key"], ascending=[False, True]).head(2)
    downs = movers[movers["rank_change"] < 0].sort_values(["size", "key"], ascending=[False, True]).head(2)
    moves = [
        f"{option_name(question, str(r.key))} moved {'up' if r.rank_change > 0 else 'down'} from "
        f"{place(int(r.previous_rank))} to {place(int(r.rank))} place ({counted(r.value)}, against "
        f"{number(r.previous_value)} in {year})"
        for r in [*ups.itertuples(), *downs.itertuples()]
    ]
    if moves:
        sentences.append(capitalise("; ".join(moves)) + ".")
    added = rows[rows["comparison"] == "added"].sort_values(["value", "key"], ascending=[False, True])
    if not added.empty:
        items = [f"{option_name(question, str(r.key))} ({counted(r.value)})" for r in added.itertuples()]
        sentences.append(f"New {noun if len(items) == 1 else nouns} this year, not selected in {year}: "
                         f"{join(items)}.")
    dropped = rows[rows["comparison"] == "dropped"].sort_values(["previous_value", "key"], ascending=[False, True])
    if not dropped.empty:
        items = [f"{option_name(question, str(r.key))} ({counted(r.previous_value)} in {year})"
                 for r in dropped.itertuples()]
        sentences.append(f"No longer selected: {join(items)}.")
    return " ".join(sentences)


def _chosen_most(group_rows: pd.DataFrame) -> pd.DataFrame:
    """As the ECCP report does: the options at least half of the group chose, and never fewer than three."""
    group_rows = group_rows.sort_values(["value", "key"], ascending=[False, True])
    n = _value(group_rows.iloc[0], "denominator") or 0
    chosen = group_rows[group_rows["value"] >= n / 2]
    if len(chosen) < 3:
        third = group_rows.iloc[min(2, len(group_rows) - 1)]["value"]
        chosen = group_rows[(group_rows["value"] >= third) & (group_rows["value"] > 0)]
    return chosen


def by_group(report: IndicatorReport, question: Question) -> list[Paragraph]:
    """One paragraph per value of the first breakdown attribute, the options chosen most as bullets: "Large
    clusters (13 responding clusters) chose most often: Partner search (8 clusters)". Template fields of
    ``intro``: group, responding, plural, singular."""
    respondent = report.questionnaire.respondent
    wording = report.questionnaire.wording(question.code)
    attributes = report.questionnaire.breakdown_by
    if not attributes:
        return ranked(report, question)
    rows = report.stat_rows(question.code, "count")
    rows = rows[rows["group"].str.startswith(attributes[0] + "=")]
    paragraphs = []
    for group, group_rows in rows.groupby("group", sort=False):
        n = _value(group_rows.iloc[0], "denominator") or 0
        if not n:
            continue
        items = []
        for r in _chosen_most(group_rows).itertuples():
            item = f"{option_name(question, str(r.key))} ({count(r.value, respondent.singular, respondent.plural)}"
            if r.comparison in ("comparable", "added") and pd.notna(r.previous_value) and r.previous_denominator:
                item += f"; {number(r.previous_value)} of {number(r.previous_denominator)} in {report.previous_year}"
            elif r.comparison == "new":
                item += "; new option"
            items.append(item + ")")
        value = str(group).partition("=")[2]
        intro = wording.intro
        template = (intro.get(value) or intro.get("*")) if isinstance(intro, dict) else intro
        fields = {"group": group_label(report, str(group)), "plural": respondent.plural,
                  "singular": respondent.singular,
                  "responding": count(n, "responding " + respondent.singular, "responding " + respondent.plural)}
        text = fill(template or "{group} {plural} ({responding}) chose most often:", fields)
        title = "" if paragraphs else question_title(report, question)
        paragraphs.append(Paragraph(question.code, title, capitalise(text), tuple(items)))
    return paragraphs or ranked(report, question)


# --- yes/no, numbers, scales, text -----------------------------------------------------------------------------


def yes_no(report: IndicatorReport, question: Question) -> Paragraph | None:
    """Template fields: label, share ("14 of 19 (73.7%)"), who ("Most partnerships"), more_than_half, plural."""
    row = report.stat_row(question.code, "yes")
    if row is None:
        return None
    respondent = report.questionnaire.respondent
    yes, n = _value(row), _value(row, "denominator")
    ratio = (yes or 0) / n if n else 0
    plural = respondent.plural
    who = (f"Most {plural}" if ratio > 0.5 else f"Half of the {plural}" if ratio == 0.5
           else f"A minority of {plural}")
    fields = {"label": question.label, "share": share(yes, n), "who": who, "plural": plural,
              "more_than_half": ", more than half" if ratio > 0.5 else ""}
    template = report.questionnaire.wording(question.code).sentence
    text = fill(template or "\u201c{label}\u201d: yes for {share} {plural} that answered", fields)
    if _is_new(report, question):
        return Paragraph(question.code, question_title(report, question),
                         f"New question in {report.year}, {text}." + _new_note(report))
    change = change_in_share(yes, n, _value(row, "previous_value"), _value(row, "previous_denominator"),
                             report.previous_year)
    return Paragraph(question.code, question_title(report, question), capitalise(text) + (f", {change}." if change else "."))


def _by_group_part(report: IndicatorReport, question: Question, stat: str) -> str:
    attributes = report.questionnaire.breakdown_by
    if not attributes:
        return ""
    rows = report.stat_rows(question.code, stat)
    rows = rows[rows["group"].str.startswith(attributes[0] + "=") & rows["value"].notna()]
    items = [f"{number(r.value)} by {group_label(report, r.group)}" for r in rows.itertuples()]
    return f"; {join(items)} {report.questionnaire.respondent.plural}" if items else ""


def numbers(report: IndicatorReport, question: Question) -> Paragraph | None:
    """Template fields: label, total, total_counted ("21 cooperation agreements", with the question's ``unit``),
    has_have, is_are, answered_counted ("19 partnerships"), mean, median, singular, plural, by_group_part
    ("; 15 by large and 6 by small clusters")."""
    total = report.stat_row(question.code, "sum")
    if total is None:
        return None
    respondent = report.questionnaire.respondent
    wording = report.questionnaire.wording(question.code)
    value = _value(total)
    fields = {
        "label": question.label, "total": number(value), "total_counted": _counted(value, _units(wording)),
        "has_have": "has" if value == 1 else "have", "is_are": "is" if value == 1 else "are",
        "answered_counted": count(_value(total, "denominator"), respondent.singular, respondent.plural),
        "mean": number(_value(report.stat_row(question.code, "mean"))),
        "median": number(_value(report.stat_row(question.code, "median"))),
        "singular": respondent.singular, "plural": respondent.plural,
        "by_group_part": _by_group_part(report, question, "sum"),
    }
    text = fill(wording.sentence or "\u201c{label}\u201d: {total_counted} in all from the {answered_counted} that "
                "answered (mean {mean}, median {median} per {singular}{by_group_part})", fields)
    text = capitalise(text)
    if _is_new(report, question):
        return Paragraph(question.code, question_title(report, question), f"New question in {report.year}: {text}."
                         + _new_note(report))
    change = change_in_counts(value, _value(total, "previous_value"), report.previous_year, "")
    return Paragraph(question.code, question_title(report, question), text + (f", {change}." if change else "."))


def scale(report: IndicatorReport, question: Question) -> Paragraph | None:
    """Template fields: label, mean, median, low, high (the ends of the scale as worded), answered_counted,
    distribution ("5 - Very satisfied: 4 of 20 (20.0%); ...", highest value first), plural."""
    mean = report.stat_row(question.code, "mean")
    if mean is None:
        return None
    respondent = report.questionnaire.respondent
    values = report.stat_rows(question.code, "count")
    values = values[values["group"] == ""]
    n = _value(mean, "denominator")
    distribution = "; ".join(f"{question.scale_label(int(r.key))}: {share(r.value, r.denominator)}"
                             for r in values.sort_values("position", ascending=False).itertuples()
                             if r.value and r.value > 0)
    fields = {"label": question.label, "mean": number(_value(mean)),
              "median": number(_value(report.stat_row(question.code, "median"))),
              "low": question.scale_label(question.scale_values[0]),
              "high": question.scale_label(question.scale_values[-1]),
              "answered_counted": count(n, respondent.singular, respondent.plural),
              "distribution": distribution or "no answers", "plural": respondent.plural}
    template = report.questionnaire.wording(question.code).sentence
    text = capitalise(fill(template or "\u201c{label}\u201d ({low} to {high}): a mean of {mean} and a median of "
                           "{median} from {answered_counted} that answered ({distribution})", fields))
    if _is_new(report, question):
        return Paragraph(question.code, question_title(report, question), f"New question in {report.year}: {text}."
                         + _new_note(report))
    previous = _value(mean, "previous_value")
    if report.previous_year is not None and previous is not None:
        text += f", against a mean of {number(previous)} in {report.previous_year}"
        if n is not None and n < SMALL_BASE:
            text += f" ({number(_value(mean, 'previous_denominator'))} answered)"
    return Paragraph(question.code, question_title(report, question), text + ".")


def free_text(report: IndicatorReport, question: Question) -> Paragraph | None:
    """Template fields: label, respondents ("3 partnerships"), names (their acronyms or names), quoted ("they are
    quoted at the end of this summary")."""
    stories = [story for story in report.stories if story.question == question.code]
    if not stories:
        return None
    respondent = report.questionnaire.respondent
    names = [story.acronym or story.partnership_name for story in stories]
    fields = {"label": question.label, "names": join(names),
              "respondents": count(len(stories), respondent.singular, respondent.plural),
              "quoted": f"{'it is' if len(names) == 1 else 'they are'} quoted at the end of this summary"}
    template = report.questionnaire.wording(question.code).sentence
    text = fill(template or "{respondents} answered \u201c{label}\u201d ({names}); {quoted}", fields)
    return Paragraph(question.code, question_title(report, question), capitalise(text) + ".")
