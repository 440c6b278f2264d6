"""Rendering: the consultation's name carries its year exactly once, whatever the questionnaire's title says."""

from __future__ import annotations

import datetime as dt

import pytest

from consult.mail.render import BatchContext, render_content


@pytest.mark.parametrize(
    ("title", "shown"),
    [
        ("ESCP-4i yearly consultation 2019", "ESCP-4i yearly consultation 2019"),
        ("Panel survey", "Panel survey 2019"),
        ("Survey 20190", "Survey 20190 2019"),  # another number that merely contains the year
    ],
)
@pytest.mark.parametrize("language", ["en", "fr"])
def test_every_email_names_the_consultation_with_its_year_once(title, shown, language):
    context = BatchContext(year=2019, deadline=dt.date(2019, 6, 30), consultation_title=title,
                           sender_name="ECCP", language=language)
    for kind in ("invitation", "reminder", "thank_you"):
        content = render_content(kind, context)
        for part in (content.subject, content.text, content.html):
            assert shown in part, (kind, language)
            assert "2019 2019" not in part, (kind, language)
