"""The summary's narrative, written from the indicators in the register of the ECCP's published report.

"The United States of America is the most selected market (8 partnerships); Canada and Japan share second place
(7 partnerships each)". Rules: country names come from their codes (``consult.questionnaire.country_name``), ties
are worded as ties, every percentage carries its denominator, and a change on a small base is worded as counts
("14 of 20, against 12 of 19 in 2019") rather than as a percentage that would overstate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

import pandas as pd

from consult.indicators import MARKET_INDICATOR, IndicatorReport
from consult.questionnaire import country_name

# Below this many respondents, a change is worded as counts, not as a percentage change.
SMALL_BASE = 30
# The market sentence names rank groups until at least this many markets are named.
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
    """``Knowledge sharing`` -> ``knowledge sharing``, leaving acronyms (``SME``) alone."""
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
# Paragraphs


def build_narrative(report: IndicatorReport) -> list[Paragraph]:
    paragraphs = [participation(report), *markets(report), *sme_involvement(report),
                  cooperation(report), *new_questions(report), stories(report)]
    return [p for p in paragraphs if p is not None]


def participation(report: IndicatorReport) -> Paragraph:
    consulted = report.value("consulted")
    responses = report.value("responses")
    strands = []
    for row in report.rows("responses").itertuples():
        if pd.notna(row.strand):
            of = "all" if row.value == row.denominator else f"{number(row.value)} of the"
            strands.append(f"{of} {number(row.denominator)} Strand {row.strand} partnerships")
    text = (
        f"The {number(consulted)} partnerships of the panel were consulted and {count(responses, 'response')} "
        f"were collected, a response rate of {rate(responses, consulted)}"
    )
    text += f": {join(strands)} responded." if strands else "."
    previous = report.row("responses")
    if report.previous_year is not None and _value(previous, "previous_value") is not None:
        text += (
            f" In {report.previous_year}, {number(_value(previous, 'previous_value'))} of "
            f"{number(_value(previous, 'previous_denominator'))} partnerships had responded."
        )
    return Paragraph("participation", "Participation", text)


def _rank_groups(rows: pd.DataFrame) -> list[tuple[int, float, list[str]]]:
    """Ranked markets grouped by shared rank; names within a group in alphabetical order."""
    ranked = rows[rows["rank"].notna()].copy()
    ranked["name"] = [country_name(str(code)) for code in ranked["key"]]
    ranked = ranked.sort_values(["rank", "name"])
    groups = []
    for rank, members in groupby(ranked.itertuples(), key=lambda r: int(r.rank)):
        members = list(members)
        groups.append((rank, float(members[0].value), [str(m.key) for m in members]))
    return groups


def _names(codes: list[str]) -> str:
    return join([market_name(code) for code in codes])


def _each(n: float, codes: list[str]) -> str:
    return f"{count(n, 'partnership')}{' each' if len(codes) > 1 else ''}"


def markets(report: IndicatorReport) -> list[Paragraph]:
    rows = report.rows(MARKET_INDICATOR)
    groups = _rank_groups(rows)
    if not groups:
        return []
    named: list[tuple[int, float, list[str]]] = []
    for group in groups:
        if sum(len(g[2]) for g in named) >= MARKETS_NAMED:
            break
        named.append(group)
    rank, value, codes = named[0]
    if len(codes) == 1:
        text = f"{capitalise(_names(codes))} is the most selected market ({_each(value, codes)})"
    else:
        text = f"{capitalise(_names(codes))} are the most selected markets ({_each(value, codes)})"
    if len(named) > 1:
        rank, value, codes = named[1]
        if len(codes) == 1:
            text += f", {_names(codes)} the {ordinal(rank)} ({_each(value, codes)})"
        else:
            text += f"; {_names(codes)} share {ordinal(rank)} place ({_each(value, codes)})"
    rest = [f"{_names(codes)} ({_each(value, codes)})" for _rank, value, codes in named[2:]]
    if rest:
        text += ", followed by " + join(rest)
    text += "."
    distinct = report.value("markets_distinct")
    selections = report.row("market_selections")
    if distinct is not None and selections is not None:
        text += (
            f" In all, {count(distinct, 'market')} were selected ({count(_value(selections), 'selection')} by "
            f"{count(_value(selections, 'denominator'), 'responding partnership')})."
        )
        others = [g for g in groups[len(named):]]
        if others:
            text += f" No other market was selected by more than {count(others[0][1], 'partnership')}."
    paragraph = Paragraph("markets", "Key markets targeted for international cooperation", text.strip())
    if report.previous_year is None:
        return [paragraph]
    return [paragraph, Paragraph("markets", "", _market_changes(report, rows))]


def _market_changes(report: IndicatorReport, rows: pd.DataFrame) -> str:
    year = report.previous_year
    sentences = []
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
            parts.append(f"{count(now, 'partnership')}, {trend}")
        verb = "remains" if len(now_codes) == 1 else "remain"
        sentences.append(f"Compared with {year}, {_names(now_codes)} {verb} the most selected ({'; '.join(parts)}).")
    elif now_codes and before_codes:
        sentences.append(f"Compared with {year}, {_names(now_codes)} "
                         f"{'has' if len(now_codes) == 1 else 'have'} replaced {_names(before_codes)} "
                         f"as the most selected.")
    movers = rows[rows["rank_change"].notna() & (rows["rank_change"] != 0)].copy()
    movers["size"] = movers["rank_change"].abs()
    ups = movers[movers["rank_change"] > 0].sort_values(["size", "key"], ascending=[False, True]).head(2)
    downs = movers[movers["rank_change"] < 0].sort_values(["size", "key"], ascending=[False, True]).head(2)
    moves = [
        f"{market_name(str(r.key))} moved {'up' if r.rank_change > 0 else 'down'} from {place(int(r.previous_rank))} "
        f"to {place(int(r.rank))} place ({count(r.value, 'partnership')}, against {number(r.previous_value)} "
        f"in {year})"
        for r in [*ups.itertuples(), *downs.itertuples()]
    ]
    if moves:
        sentences.append(capitalise("; ".join(moves)) + ".")
    added = rows[rows["comparison"] == "added"].sort_values(["value", "key"], ascending=[False, True])
    if not added.empty:
        items = [f"{market_name(str(r.key))} ({count(r.value, 'partnership')})" for r in added.itertuples()]
        sentences.append(f"New market{'s' if len(items) > 1 else ''} this year, not selected in {year}: "
                         f"{join(items)}.")
    dropped = rows[rows["comparison"] == "dropped"].sort_values(["previous_value", "key"], ascending=[False, True])
    if not dropped.empty:
        items = [f"{market_name(str(r.key))} ({count(r.previous_value, 'partnership')} in {year})"
                 for r in dropped.itertuples()]
        sentences.append(f"No longer selected: {join(items)}.")
    return " ".join(sentences)


def _sme_chosen(strand_rows: pd.DataFrame) -> pd.DataFrame:
    """As the report does: the activities at least half of the strand chose, and never fewer than three."""
    strand_rows = strand_rows.sort_values(["value", "key"], ascending=[False, True])
    n = _value(strand_rows.iloc[0], "denominator") or 0
    chosen = strand_rows[strand_rows["value"] >= n / 2]
    if len(chosen) < 3:
        third = strand_rows.iloc[min(2, len(strand_rows) - 1)]["value"]
        chosen = strand_rows[(strand_rows["value"] >= third) & (strand_rows["value"] > 0)]
    return chosen


def sme_involvement(report: IndicatorReport) -> list[Paragraph]:
    """One paragraph per strand, the activities as bullets: "SME members from Strand 1 partnerships (13
    responding partnerships) have been mostly involved in: Establishment of business contacts (8 partnerships)"."""
    rows = report.rows("sme_involvement")
    if rows.empty:
        return []
    question = report.questionnaire.question(str(rows["question"].iloc[0]))
    paragraphs = []
    for strand, strand_rows in rows[rows["strand"].notna()].groupby("strand", sort=True):
        n = _value(strand_rows.iloc[0], "denominator") or 0
        items = []
        for r in _sme_chosen(strand_rows).itertuples():
            item = f"{question.option_label(str(r.key))} ({count(r.value, 'partnership')}"
            if r.comparison in ("comparable", "added") and pd.notna(r.previous_value) and r.previous_denominator:
                item += f"; {number(r.previous_value)} of {number(r.previous_denominator)} in {report.previous_year}"
            elif r.comparison == "new":
                item += "; new option"
            items.append(item + ")")
        adverb = "mostly" if strand == 1 else "strongly"
        text = (f"SME members from Strand {strand} partnerships ({count(n, 'responding partnership')}) "
                f"have been {adverb} involved in:")
        title = "" if paragraphs else "SME involvement"
        paragraphs.append(Paragraph("sme_involvement", title, text, tuple(items)))
    return paragraphs


def cooperation(report: IndicatorReport) -> Paragraph | None:
    total = report.row("cooperation_agreements_total")
    sentences = []
    if total is not None:
        by_strand = [f"{number(r.value)} by Strand {r.strand}" for r in
                     report.rows("cooperation_agreements_total").itertuples()
                     if pd.notna(r.strand) and pd.notna(r.value)]
        text = (f"A total of {count(_value(total), 'cooperation agreement')} "
                f"{'has' if _value(total) == 1 else 'have'} been signed by the "
                f"{count(_value(total, 'denominator'), 'partnership')} that responded to this consultation "
                f"(mean {number(report.value('cooperation_agreements_mean'))}, median "
                f"{number(report.value('cooperation_agreements_median'))} per partnership")
        text += f"; {join(by_strand)} partnerships)" if by_strand else ")"
        change = change_in_counts(_value(total), _value(total, "previous_value"), report.previous_year, "")
        sentences.append(text + (f", {change}." if change else "."))
    missions = report.row("business_missions_planned_yes")
    if missions is not None:
        yes, n = _value(missions), _value(missions, "denominator")
        ratio = (yes or 0) / n if n else 0
        who = ("Most partnerships" if ratio > 0.5 else "Half of the partnerships" if ratio == 0.5
               else "A minority of partnerships")
        detail = f"{share(yes, n)} respondents" + (", more than half" if ratio > 0.5 else "")
        text = f"{who} plan business missions to countries beyond Europe next year: {detail}"
        change = change_in_share(yes, n, _value(missions, "previous_value"),
                                 _value(missions, "previous_denominator"), report.previous_year)
        sentences.append(text + (f", {change}." if change else "."))
    members = report.row("sme_members_total")
    if members is not None:
        text = (f"{count(_value(members), 'SME member')} {'is' if _value(members) == 1 else 'are'} actively "
                f"involved in the responding partnerships (mean {number(report.value('sme_members_mean'))}, "
                f"median {number(report.value('sme_members_median'))} per partnership)")
        change = change_in_counts(_value(members), _value(members, "previous_value"), report.previous_year, "")
        sentences.append(capitalise(text) + (f", {change}." if change else "."))
    if not sentences:
        return None
    return Paragraph("cooperation", "Cooperation agreements and business missions", " ".join(sentences))


def new_questions(report: IndicatorReport) -> list[Paragraph]:
    """Questions asked for the first time: their figures, explicitly not compared."""
    paragraphs = []
    for code in report.new_questions:
        question = report.questionnaire.question(code)
        rows = report.table[(report.table["question"] == code) & report.table["indicator"].str.endswith("_yes")]
        if rows.empty:
            continue
        row = rows.iloc[0]
        text = (f"New question in {report.year}, \u201c{question.label}\u201d: yes for "
                f"{share(_value(row), _value(row, 'denominator'))} partnerships that answered. ")
        if report.previous_year is not None:
            text += f"It was not asked in {report.previous_year}, so there is no change to report."
        paragraphs.append(Paragraph("new_question", question.label, text.strip()))
    return paragraphs


def stories(report: IndicatorReport) -> Paragraph | None:
    if not report.stories:
        return None
    names = [story.acronym or story.partnership_name for story in report.stories]
    text = (f"{count(len(report.stories), 'partnership')} shared a success story ({join(names)}); "
            f"{'it is' if len(names) == 1 else 'they are'} quoted at the end of this summary.")
    return Paragraph("stories", "Success stories", text)
