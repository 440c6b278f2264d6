"""Specification of the ESCP-4i reference data set in ``examples/escp4i/``.

The reference data set is the engine's demo and its acceptance oracle: a summary computed from it must
reproduce the figures the ECCP published for the first ESCP-4i consultation (2019), and the 2020 round must
give year-over-year changes worth showing.

These tests use only the standard library (``csv``, ``re``, ``statistics``); they do not import project code,
so they pin down the *data*, independently of the engine that reads it.

Acceptance rule used throughout ("accepted answers"): for every partnership of the panel, the latest complete
submission (non-empty ``submitted_at``, latest timestamp wins). Rows of partnerships unknown to the panel and
incomplete rows never count.
"""

from __future__ import annotations

import csv
import re
import statistics
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "examples" / "escp4i"

PANEL_HEADER = [
    "partnership_id",
    "name",
    "acronym",
    "strand",
    "country",
    "contact_first_name",
    "contact_last_name",
    "contact_email",
    "language",
]
RESPONSES_HEADER = [
    "partnership_id",
    "submitted_at",
    "markets",
    "sme_involvement",
    "cooperation_agreements",
    "business_missions_planned",
    "sme_members",
    "success_story",
]
RESPONSES_HEADER_2020 = RESPONSES_HEADER + ["digital_tools"]

SME_OPTIONS = {
    2019: [
        "business_contacts",
        "knowledge_sharing",
        "joint_events",
        "exports_imports",
        "soft_landing",
        "other",
    ],
    2020: [
        "business_contacts",
        "knowledge_sharing",
        "joint_business_events",
        "exports_imports",
        "soft_landing",
        "other",
    ],
}
JOINT_EVENTS = {2019: "joint_events", 2020: "joint_business_events"}

_EU_MEMBER_STATES = "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK"
EU_COUNTRIES = set(_EU_MEMBER_STATES.split())
# ISO 3166-1 alpha-2 (Debian iso-codes), so that the tests need no third-party package.
_ISO3166_ALPHA2_CODES = """
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT
BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH
ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT
HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS
LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI
NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG
SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG
UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
"""
ISO3166_ALPHA2 = set(_ISO3166_ALPHA2_CODES.split())
assert len(ISO3166_ALPHA2) == 249

EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.example$")
ID_RE = re.compile(r"^ESCP4I-\d{2}$")
ISO_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")

SCRIPT_PAYLOAD = "<script>alert(1)</script>"
FORMULA_PAYLOAD = '=HYPERLINK("http://evil.example","x")'


# ---------------------------------------------------------------------------------------------- helpers
def read_csv(name: str) -> tuple[list[str], list[dict[str, str]]]:
    """Read a reference CSV strictly as UTF-8 with the standard ``csv`` module."""
    with open(DATA / name, newline="", encoding="utf-8", errors="strict") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def panel_rows() -> list[dict[str, str]]:
    return read_csv("panel.csv")[1]


def panel() -> dict[str, dict[str, str]]:
    """partnership_id -> partnership attributes (first contact row)."""
    out: dict[str, dict[str, str]] = {}
    for row in panel_rows():
        out.setdefault(row["partnership_id"], row)
    return out


def strand_of(pid: str) -> int:
    return int(panel()[pid]["strand"])


def responses(year: int) -> list[dict[str, str]]:
    return read_csv(f"responses-{year}.csv")[1]


def is_complete(row: dict[str, str]) -> bool:
    return row["submitted_at"].strip() != ""


def accepted(year: int) -> dict[str, dict[str, str]]:
    """Latest complete submission per partnership known to the panel."""
    known = set(panel())
    best: dict[str, dict[str, str]] = {}
    for row in responses(year):
        pid = row["partnership_id"]
        if pid not in known or not is_complete(row):
            continue
        if pid not in best or row["submitted_at"] > best[pid]["submitted_at"]:
            best[pid] = row
    return best


def split(value: str) -> list[str]:
    return [v for v in value.split(";") if v != ""]


def market_counts(rows) -> Counter:
    return Counter(code for row in rows for code in split(row["markets"]))


def sme_counts(rows) -> Counter:
    return Counter(code for row in rows for code in split(row["sme_involvement"]))


def by_strand(year: int, strand: int) -> list[dict[str, str]]:
    return [row for pid, row in accepted(year).items() if strand_of(pid) == strand]


def nf4_id() -> str:
    (pid,) = [pid for pid, p in panel().items() if p["acronym"] == "NF4"]
    return pid


# ---------------------------------------------------------------------------------------------- panel
class TestPanel:
    def test_header_is_exactly_the_documented_one(self):
        """panel.csv is UTF-8, comma separated, with the documented header in the documented order."""
        header, _ = read_csv("panel.csv")
        assert header == PANEL_HEADER

    def test_panel_has_23_partnerships_numbered_01_to_23(self):
        """The panel consists of the 23 ESCP-4i partnerships ESCP4I-01 .. ESCP4I-23."""
        assert sorted(panel()) == [f"ESCP4I-{i:02d}" for i in range(1, 24)]

    def test_16_strand_1_and_7_strand_2_partnerships(self):
        """16 partnerships belong to Strand 1 and 7 to Strand 2; strand is 1 or 2."""
        strands = Counter(p["strand"] for p in panel().values())
        assert strands == {"1": 16, "2": 7}

    def test_nf4_is_new_frontiers_in_food_in_strand_2(self):
        """One Strand 2 partnership is "New Frontiers in Food", acronym NF4."""
        p = panel()[nf4_id()]
        assert p["name"] == "New Frontiers in Food"
        assert p["strand"] == "2"

    def test_names_and_acronyms_are_unique_and_non_empty(self):
        """Each partnership has its own non-empty name and acronym."""
        ps = list(panel().values())
        assert all(p["name"].strip() and p["acronym"].strip() for p in ps)
        assert len({p["name"] for p in ps}) == len(ps)
        assert len({p["acronym"] for p in ps}) == len(ps)

    def test_partnership_columns_repeat_identically_on_each_contact_row(self):
        """A partnership with several contacts repeats the same partnership columns on every contact row."""
        cols = ["name", "acronym", "strand", "country"]
        seen: dict[str, tuple] = {}
        for row in panel_rows():
            values = tuple(row[c] for c in cols)
            assert seen.setdefault(row["partnership_id"], values) == values, row["partnership_id"]

    def test_three_or_four_partnerships_have_two_contacts_the_rest_one(self):
        """3 to 4 partnerships have exactly two contacts; every other partnership has exactly one."""
        per = Counter(row["partnership_id"] for row in panel_rows())
        assert set(per.values()) <= {1, 2}
        assert 3 <= sum(1 for n in per.values() if n == 2) <= 4

    def test_country_is_the_iso_alpha2_code_of_an_eu_member_state(self):
        """country is the ISO 3166-1 alpha-2 code of the coordinator's EU member state."""
        for p in panel().values():
            assert p["country"] in EU_COUNTRIES, p

    def test_emails_are_valid_distinct_and_on_example_domains(self):
        """Contact emails have valid syntax, use reserved .example domains and are all distinct."""
        emails = [row["contact_email"] for row in panel_rows()]
        for e in emails:
            assert EMAIL_RE.match(e), e
        assert len({e.lower() for e in emails}) == len(emails)

    def test_contacts_have_first_and_last_names(self):
        """Every contact row names a person (first and last name)."""
        for row in panel_rows():
            assert row["contact_first_name"].strip() and row["contact_last_name"].strip(), row

    def test_languages_are_mostly_english_with_a_few_french_or_german(self):
        """language is en for most contacts; a couple are fr or de."""
        langs = Counter(row["language"] for row in panel_rows())
        assert set(langs) <= {"en", "fr", "de"}
        assert langs["en"] > len(panel_rows()) / 2

    def test_at_least_one_contact_name_is_not_ascii(self):
        """At least one contact name contains a non-ASCII character (exercises UTF-8 end to end)."""
        names = [row["contact_first_name"] + row["contact_last_name"] for row in panel_rows()]
        assert any(not n.isascii() for n in names)


# ---------------------------------------------------------------------------------------------- questionnaires
def yaml_text(year: int) -> str:
    return (DATA / f"questionnaire-{year}.yaml").read_text(encoding="utf-8")


class TestQuestionnaires:
    def test_2019_declares_code_version_title_and_matching_keys(self):
        """The 2019 questionnaire is escp4i version 2019, matched by token, then partnership_id, then email."""
        text = yaml_text(2019)
        assert "code: escp4i\n" in text
        assert "version: 2019\n" in text
        assert "title: ESCP-4i yearly consultation 2019\n" in text
        assert "match_by: [token, partnership_id, email]\n" in text

    def test_2019_question_codes_kinds_and_order(self):
        """2019 asks, in order: markets, sme_involvement, cooperation_agreements, business_missions_planned,
        sme_members, success_story, with the documented kinds."""
        text = yaml_text(2019)
        pairs = re.findall(r"^  - code: (\w+)\n    kind: (\w+)$", text, flags=re.MULTILINE)
        assert pairs == [
            ("markets", "multi_select"),
            ("sme_involvement", "multi_select"),
            ("cooperation_agreements", "integer"),
            ("business_missions_planned", "yes_no"),
            ("sme_members", "integer"),
            ("success_story", "text"),
        ]

    def test_2019_sme_involvement_options(self):
        """The 2019 SME involvement options are the six documented codes, joint_events among them."""
        codes = re.findall(r"^      - \{code: (\w+),", yaml_text(2019), flags=re.MULTILINE)
        assert codes == SME_OPTIONS[2019]

    def test_2020_is_2019_plus_a_renamed_option_and_one_new_question(self):
        """2020 is 2019 except: version/title 2020; joint_events renamed joint_business_events (with
        previous_code: joint_events); and a new optional yes_no question digital_tools appended."""
        expected = (
            yaml_text(2019)
            .replace("version: 2019\n", "version: 2020\n")
            .replace("consultation 2019\n", "consultation 2020\n")
            .replace(
                "{code: joint_events, label: Joint business events}",
                "{code: joint_business_events, label: Joint business events, previous_code: joint_events}",
            )
        ) + (
            "  - code: digital_tools\n"
            "    kind: yes_no\n"
            "    label: Digital matchmaking tools used this year\n"
            "    required: false\n"
        )
        assert yaml_text(2020) == expected

    @pytest.mark.parametrize("year", [2019, 2020])
    def test_questionnaires_parse_as_yaml_when_pyyaml_is_available(self, year):
        """Each questionnaire is valid YAML with the structure described above (skipped without PyYAML)."""
        yaml = pytest.importorskip("yaml")
        doc = yaml.safe_load(yaml_text(year))
        assert doc["code"] == "escp4i" and doc["version"] == year
        assert doc["match_by"] == ["token", "partnership_id", "email"]
        qs = {q["code"]: q for q in doc["questions"]}
        assert qs["markets"]["options"] == "iso3166"
        assert [o["code"] for o in qs["sme_involvement"]["options"]] == SME_OPTIONS[year]
        assert (qs["cooperation_agreements"]["min"], qs["cooperation_agreements"]["max"]) == (0, 200)
        assert (qs["sme_members"]["min"], qs["sme_members"]["max"]) == (0, 5000)
        assert qs["success_story"]["required"] is False and qs["success_story"]["max_length"] == 5000
        if year == 2020:
            (renamed,) = [o for o in qs["sme_involvement"]["options"] if "previous_code" in o]
            assert renamed == {
                "code": "joint_business_events",
                "label": "Joint business events",
                "previous_code": "joint_events",
            }
            assert qs["digital_tools"] == {
                "code": "digital_tools",
                "kind": "yes_no",
                "label": "Digital matchmaking tools used this year",
                "required": False,
            }
        else:
            assert "digital_tools" not in qs


# ---------------------------------------------------------------------------------------------- responses, any year
@pytest.mark.parametrize("year,header", [(2019, RESPONSES_HEADER), (2020, RESPONSES_HEADER_2020)])
def test_responses_header_is_the_plain_export_layout(year, header):
    """Responses use the plain layout: one column per question code after partnership_id and submitted_at."""
    assert read_csv(f"responses-{year}.csv")[0] == header


@pytest.mark.parametrize("year", [2019, 2020])
def test_submitted_at_is_iso_8601_in_the_round_year_or_empty(year):
    """submitted_at is an ISO 8601 local timestamp (YYYY-MM-DDTHH:MM:SS) of the round's year, or empty
    for an incomplete submission."""
    for row in responses(year):
        ts = row["submitted_at"]
        if ts:
            assert ISO_DATETIME_RE.match(ts), ts
            assert datetime.fromisoformat(ts).year == year


@pytest.mark.parametrize("year", [2019, 2020])
def test_complete_rows_hold_valid_answers_for_every_required_question(year):
    """Every complete row answers each required question validly: 1-6 distinct upper-case ISO alpha-2
    markets; 1+ distinct known SME options; integers within the questionnaire bounds; yes/no; a story of
    at most 5000 characters; and (2020) digital_tools yes, no or empty."""
    for row in responses(year):
        if not is_complete(row):
            continue
        markets = split(row["markets"])
        assert 1 <= len(markets) <= 6 and len(set(markets)) == len(markets), row
        assert all(m in ISO3166_ALPHA2 and m.isupper() for m in markets), row
        sme = split(row["sme_involvement"])
        assert sme and len(set(sme)) == len(sme) and set(sme) <= set(SME_OPTIONS[year]), row
        assert 0 <= int(row["cooperation_agreements"]) <= 200
        assert 0 <= int(row["sme_members"]) <= 5000
        assert row["business_missions_planned"] in {"yes", "no"}
        assert len(row["success_story"]) <= 5000
        if year == 2020:
            assert row["digital_tools"] in {"yes", "no", ""}


@pytest.mark.parametrize("year", [2019, 2020])
def test_accepted_sme_members_are_plausible(year):
    """Accepted sme_members are plausible cluster sizes: between 5 and 150."""
    for row in accepted(year).values():
        assert 5 <= int(row["sme_members"]) <= 150, row


@pytest.mark.parametrize("year", [2019, 2020])
def test_each_partnership_has_at_most_one_accepted_answer_per_year(year):
    """Acceptance yields one answer per partnership; no two complete rows of a partnership share a timestamp
    (so "latest" is never ambiguous)."""
    stamps = Counter((r["partnership_id"], r["submitted_at"]) for r in responses(year) if is_complete(r))
    assert max(stamps.values()) == 1


# ---------------------------------------------------------------------------------------------- 2019 figures
class TestPublished2019Figures:
    """The accepted 2019 answers reproduce every figure published by the ECCP."""

    def test_23_consulted_19_responded(self):
        """23 partnerships were consulted and 19 distinct partnerships responded."""
        assert len(panel()) == 23
        assert len(accepted(2019)) == 19

    def test_13_strand_1_and_6_strand_2_responders(self):
        """The 19 responders are 13 Strand 1 and 6 Strand 2 partnerships."""
        assert len(by_strand(2019, 1)) == 13
        assert len(by_strand(2019, 2)) == 6

    def test_key_markets_exact_counts(self):
        """Key markets: US 8, CA 7, JP 7, CN 5, IL 4, ZA 4, IN 3, KR 3 partnerships."""
        counts = market_counts(accepted(2019).values())
        expected = {"US": 8, "CA": 7, "JP": 7, "CN": 5, "IL": 4, "ZA": 4, "IN": 3, "KR": 3}
        assert {m: counts[m] for m in expected} == expected

    def test_us_is_strictly_the_most_selected_market(self):
        """The United States is the single most selected market."""
        (first, n1), (_, n2) = market_counts(accepted(2019).values()).most_common(2)
        assert first == "US" and n1 > n2

    def test_every_other_market_is_selected_by_at_most_3(self):
        """No market outside the published list is selected by more than 3 partnerships, and several
        other markets do appear."""
        counts = market_counts(accepted(2019).values())
        others = {
            m: n for m, n in counts.items() if m not in {"US", "CA", "JP", "CN", "IL", "ZA", "IN", "KR"}
        }
        assert others and max(others.values()) <= 3
        assert len(others) >= 4

    def test_strand_1_sme_involvement(self):
        """Strand 1: business contacts 8, knowledge sharing 7, joint business events 4; every other option
        fewer than 4."""
        counts = sme_counts(by_strand(2019, 1))
        assert counts["business_contacts"] == 8
        assert counts["knowledge_sharing"] == 7
        assert counts["joint_events"] == 4
        for option in ("exports_imports", "soft_landing", "other"):
            assert counts[option] < 4, option

    def test_strand_2_strongly_involved(self):
        """Strand 2 (6 responders) is strongly involved — at least 4 of 6 — in business contacts, knowledge
        sharing, exports/imports, soft-landing and joint business events; 'other' at most once."""
        rows = by_strand(2019, 2)
        counts = sme_counts(rows)
        for option in (
            "business_contacts",
            "knowledge_sharing",
            "exports_imports",
            "soft_landing",
            "joint_events",
        ):
            assert counts[option] >= 4, option
        assert counts["other"] <= 1

    def test_21_cooperation_agreements(self):
        """21 cooperation agreements were signed in total by the responding partnerships."""
        assert sum(int(r["cooperation_agreements"]) for r in accepted(2019).values()) == 21

    def test_most_plan_business_missions(self):
        """More than half of the respondents plan business missions beyond Europe."""
        rows = accepted(2019).values()
        yes = sum(r["business_missions_planned"] == "yes" for r in rows)
        assert yes > len(rows) / 2

    def test_nf4_success_story_is_the_natural_products_canada_mou(self):
        """NF4's story paraphrases its MoU with Natural Products Canada of 9 May 2019, and contains a comma
        and double quotes so that CSV quoting is exercised."""
        story = accepted(2019)[nf4_id()]["success_story"]
        assert "Natural Products Canada" in story
        assert "9 May 2019" in story or "May 9th 2019" in story
        assert "Memorandum of Understanding" in story or "MoU" in story
        assert "," in story and '"' in story

    def test_most_success_stories_are_empty(self):
        """Success stories are optional: most accepted answers leave it empty (at most two stories)."""
        stories = [r for r in accepted(2019).values() if r["success_story"].strip()]
        assert 1 <= len(stories) <= 2


class TestMessyRows2019:
    """responses-2019.csv contains realistic noise that acceptance must filter out."""

    def test_a_superseded_earlier_submission_exists_with_different_answers(self):
        """Some partnership submitted twice (complete both times, different answers); its later row is the
        accepted one and counting the earlier row instead would break a published figure."""
        rows = responses(2019)
        acc = accepted(2019)
        complete = Counter(r["partnership_id"] for r in rows if is_complete(r) and r["partnership_id"] in acc)
        twice = [pid for pid, n in complete.items() if n > 1]
        assert len(twice) == 1
        (pid,) = twice
        earlier = [
            r
            for r in rows
            if r["partnership_id"] == pid and is_complete(r) and r["submitted_at"] != acc[pid]["submitted_at"]
        ]
        assert len(earlier) == 1 and earlier[0]["submitted_at"] < acc[pid]["submitted_at"]
        answer_cols = RESPONSES_HEADER[2:]
        assert [earlier[0][c] for c in answer_cols] != [acc[pid][c] for c in answer_cols]
        wrong = dict(acc, **{pid: earlier[0]})
        total = sum(int(r["cooperation_agreements"]) for r in wrong.values())
        assert total != 21 or market_counts(wrong.values()) != market_counts(acc.values())

    def test_one_row_of_an_unknown_partnership(self):
        """Exactly one row comes from ESCP4I-99, a partnership that is not in the panel (to quarantine)."""
        unknown = [r for r in responses(2019) if r["partnership_id"] not in panel()]
        assert [r["partnership_id"] for r in unknown] == ["ESCP4I-99"]

    def test_one_incomplete_row_of_a_non_responding_partnership(self):
        """Exactly one row is incomplete (empty submitted_at); it belongs to one of the 4 partnerships that
        did not respond, so it is kept as partial but never counted."""
        incomplete = [r for r in responses(2019) if not is_complete(r)]
        assert len(incomplete) == 1
        pid = incomplete[0]["partnership_id"]
        assert pid in panel() and pid not in accepted(2019)

    def test_four_partnerships_did_not_respond(self):
        """Exactly 4 panel partnerships (3 Strand 1, 1 Strand 2) have no accepted answer in 2019."""
        missing = set(panel()) - set(accepted(2019))
        assert len(missing) == 4
        assert Counter(strand_of(p) for p in missing) == {1: 3, 2: 1}

    def test_naively_counting_every_row_would_not_reproduce_the_figures(self):
        """Counting all rows instead of accepted answers gives wrong figures (the noise is meaningful)."""
        rows = responses(2019)
        assert len({r["partnership_id"] for r in rows}) != 19
        naive = sum(int(r["cooperation_agreements"] or 0) for r in rows)
        assert naive != 21
        assert market_counts(rows)["US"] != 8


# ---------------------------------------------------------------------------------------------- 2020 figures
class TestFigures2020:
    """The 2020 round gives interesting year-over-year changes."""

    def test_20_partnerships_responded_all_complete_and_known(self):
        """20 distinct panel partnerships responded; every row is complete and from a known partnership,
        one row per partnership."""
        rows = responses(2020)
        assert len(accepted(2020)) == 20
        assert len(rows) == 20
        assert all(is_complete(r) and r["partnership_id"] in panel() for r in rows)

    def test_strand_split(self):
        """The 20 responders split into 13 Strand 1 and 7 Strand 2 partnerships (every Strand 2 answered)."""
        assert (len(by_strand(2020, 1)), len(by_strand(2020, 2))) == (13, 7)

    def test_renamed_option_is_used(self):
        """2020 answers use joint_business_events, never the 2019 code joint_events."""
        for r in responses(2020):
            options = split(r["sme_involvement"])
            assert "joint_events" not in options
        assert sme_counts(accepted(2020).values())["joint_business_events"] > 0

    def test_market_ranking_changes(self):
        """US 9 stays first; JP 8 is now alone in second place; CA 6 drops to third; CN 5; no other market
        reaches 6."""
        counts = market_counts(accepted(2020).values())
        assert (counts["US"], counts["JP"], counts["CA"], counts["CN"]) == (9, 8, 6, 5)
        assert [m for m, _ in counts.most_common(3)] == ["US", "JP", "CA"]
        assert all(n <= 5 for m, n in counts.items() if m not in {"US", "JP", "CA"})

    def test_brazil_appears_and_a_2019_market_disappears(self):
        """BR is a new market in 2020 (absent in 2019) and at least one 2019 market is absent in 2020."""
        c19 = market_counts(accepted(2019).values())
        c20 = market_counts(accepted(2020).values())
        assert c19["BR"] == 0 and c20["BR"] > 0
        assert set(c19) - set(c20)

    def test_30_cooperation_agreements(self):
        """30 cooperation agreements were signed in 2020 (21 in 2019)."""
        assert sum(int(r["cooperation_agreements"]) for r in accepted(2020).values()) == 30

    def test_digital_tools_answers_are_yes_no_or_empty(self):
        """The optional new question digital_tools holds yes, no, or nothing; all three occur."""
        values = Counter(r["digital_tools"] for r in accepted(2020).values())
        assert set(values) == {"yes", "no", ""}

    def test_a_success_story_carries_html_and_formula_injection_payloads(self):
        """One 2020 story contains a <script> tag and a spreadsheet formula, to test escaping in every output;
        the formula is at the start of the cell, where spreadsheets would evaluate it."""
        stories = [r["success_story"] for r in accepted(2020).values()]
        hostile = [s for s in stories if SCRIPT_PAYLOAD in s and FORMULA_PAYLOAD in s]
        assert len(hostile) == 1
        assert hostile[0].startswith("=")


# ---------------------------------------------------------------------------------------------- README
def readme_market_table() -> dict[str, tuple[int, int]]:
    """Market rows of the README table: | CODE | country | 2019 | 2020 | ... |"""
    out = {}
    for line in (DATA / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| ([A-Z]{2}) \| [^|]+ \| (\d+) \| (\d+) \|", line)
        if m:
            out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


def test_readme_market_table_matches_the_data():
    """The README's per-market table states, for each market, the counts the data actually give."""
    c19 = market_counts(accepted(2019).values())
    c20 = market_counts(accepted(2020).values())
    expected = {m: (c19[m], c20[m]) for m in set(c19) | set(c20)}
    assert readme_market_table() == expected


def test_readme_states_the_headline_totals():
    """The README states the headline figures: 19/23 and 20/23 responses, 21 and 30 agreements."""
    text = (DATA / "README.md").read_text(encoding="utf-8")
    medians = [
        statistics.median(int(r["cooperation_agreements"]) for r in accepted(y).values())
        for y in (2019, 2020)
    ]
    assert re.search(r"\| Responding partnerships \| 19 \| 20 \|", text)
    assert re.search(r"\| Cooperation agreements \(total\) \| 21 \| 30 \|", text)
    assert f"| Cooperation agreements (median) | {medians[0]:g} | {medians[1]:g} |" in text
