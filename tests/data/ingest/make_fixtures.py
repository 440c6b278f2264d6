"""Writes the small committed fixtures of tests/test_ingest_*.py (run again if the test token secret changes).

limesurvey-2019.xlsx: a LimeSurvey XLSX response export of three partnerships of the reference panel, tokens
derived with tests/conftest.py's TEST_TOKEN_SECRET: two complete answers, one incomplete (empty submitdate).
"""

from __future__ import annotations

from pathlib import Path

import openpyxl

from consult.tokens import derive_token

HERE = Path(__file__).resolve().parent
SECRET = ("test-secret-" + "0" * 52).encode()  # tests/conftest.py TEST_TOKEN_SECRET

HEADER = ["id", "submitdate", "lastpage", "startlanguage", "seed", "token",
          "markets[US]", "markets[CA]", "markets[JP]", "markets[IL]",
          "sme_involvement[business_contacts]", "sme_involvement[knowledge_sharing]",
          "sme_involvement[joint_events]", "sme_involvement[other]",
          "cooperation_agreements", "business_missions_planned", "sme_members", "success_story"]
ROWS = [
    [1, "2019-03-04 09:12:00", 3, "en", "123", "ESCP4I-01", "Y", "", "Y", "", "Y", "Y", "", "", 3, "Y", 42, None],
    [2, "2019-03-05 14:40:00", 3, "en", "456", "ESCP4I-02", "", "Y", "", "", "Y", "", "Y", "", 1, "N", 18,
     "Met <b>buyers</b> in Toronto;\nsigned one MoU"],
    [3, None, 1, "en", "789", "ESCP4I-12", "", "", "Y", "", "", "Y", "", "", None, None, None, None],
]


def main() -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "results-survey123456"
    sheet.append(HEADER)
    for row in ROWS:
        token_at = HEADER.index("token")
        sheet.append([*row[:token_at], derive_token(SECRET, 2019, row[token_at], "alnum"), *row[token_at + 1 :]])
    workbook.save(HERE / "limesurvey-2019.xlsx")


if __name__ == "__main__":
    main()
