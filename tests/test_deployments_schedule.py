"""deployments/prefect.yaml: every deployment loads, its parameters fit its flow, and its schedule fires when
operations staff expect it to, in Brussels time, for a given year."""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = REPO_ROOT / "deployments" / "prefect.yaml"
BRUSSELS = ZoneInfo("Europe/Brussels")
YEAR = 2027


def deployments() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(PREFECT_YAML.read_text())
    return {deployment["name"]: deployment for deployment in config["deployments"]}


def run_dates(name: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The dates Prefect's scheduler would create runs for, from the schedules as written in prefect.yaml."""
    from prefect.server.schemas.schedules import CronSchedule

    dates: list[dt.datetime] = []
    for schedule in deployments()[name].get("schedules") or []:
        cron = CronSchedule(
            cron=schedule["cron"], timezone=schedule["timezone"], day_or=schedule.get("day_or", True)
        )
        dates += asyncio.run(cron.get_dates(start=start, end=end))
    return sorted(dt.datetime.fromtimestamp(date.timestamp(), BRUSSELS) for date in dates)


def in_brussels(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=BRUSSELS)  # type: ignore[misc]


def test_there_is_one_deployment_per_job() -> None:
    """It declares the four scheduled jobs and the on-demand round, each on the process work pool."""
    found = deployments()
    assert set(found) == {
        "open-yearly-round",
        "send-due-reminders",
        "ingest-drop-folder",
        "close-and-publish",
        "run-round",
    }
    assert {deployment["work_pool"]["name"] for deployment in found.values()} == {"consult"}


@pytest.mark.parametrize("name", sorted(deployments()))
def test_each_deployment_loads_and_its_parameters_fit_its_flow(name: str) -> None:
    """The entrypoint imports, every parameter set in prefect.yaml is one the flow accepts, and every
    parameter carries a description for the UI."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    deployment = deployments()[name]
    flow = load_flow_from_entrypoint(str(REPO_ROOT / deployment["entrypoint"]))
    flow.validate_parameters(deployment.get("parameters") or {})
    schema = parameter_schema(flow).model_dump()
    undocumented = [key for key, spec in schema["properties"].items() if not spec.get("description")]
    assert undocumented == []
    assert deployment["description"].strip()


@pytest.mark.parametrize("name", sorted(deployments()))
def test_two_runs_of_one_deployment_never_run_side_by_side(name: str) -> None:
    """Each deployment allows one run at a time and queues the next one instead of refusing or overlapping."""
    limit = deployments()[name]["concurrency_limit"]
    assert limit == {"limit": 1, "collision_strategy": "ENQUEUE"}


def test_next_run_dates_of_each_deployment_for_a_given_year(test_output_dir: Path) -> None:
    """For 2027 (Brussels time): the round opens on the first Monday of February at 08:00; reminders go out
    daily at
    09:00 (also across daylight-saving changes); the drop folder is read every hour (23 times on the day
    clocks go forward); close-and-publish runs every evening at 23:45, so it runs on the closing date of a
    round opened on schedule with the default duration; the on-demand round has no schedule."""
    year_start, year_end = in_brussels(YEAR, 1, 1), in_brussels(YEAR, 12, 31, 23, 59)

    opening = run_dates("open-yearly-round", year_start, year_end)
    first_monday = next(day for day in range(1, 8) if calendar.weekday(YEAR, 2, day) == calendar.MONDAY)
    assert opening == [in_brussels(YEAR, 2, first_monday, 8, 0)]

    reminders = run_dates("send-due-reminders", year_start, year_end)
    assert len(reminders) == (366 if calendar.isleap(YEAR) else 365)
    assert {(date.hour, date.minute) for date in reminders} == {(9, 0)}
    # 09:00 in Brussels is 08:00 UTC in winter and 07:00 UTC in summer.
    assert {date.astimezone(dt.UTC).hour for date in reminders} == {7, 8}

    last_sunday_of_march = max(
        week[calendar.SUNDAY] for week in calendar.monthcalendar(YEAR, 3) if week[calendar.SUNDAY]
    )
    dst_day = run_dates(
        "ingest-drop-folder",
        in_brussels(YEAR, 3, last_sunday_of_march),
        in_brussels(YEAR, 3, last_sunday_of_march, 23, 59),
    )
    assert len(dst_day) == 23
    ordinary_day = run_dates("ingest-drop-folder", in_brussels(YEAR, 6, 1), in_brussels(YEAR, 6, 1, 23, 59))
    assert [date.hour for date in ordinary_day] == list(range(24))

    from consult.settings import Settings

    closes_on = opening[0].date() + dt.timedelta(days=Settings().round_duration_days)
    closing = run_dates("close-and-publish", year_start, year_end)
    assert len(closing) == (366 if calendar.isleap(YEAR) else 365)
    assert in_brussels(closes_on.year, closes_on.month, closes_on.day, 23, 45) in closing

    assert run_dates("run-round", year_start, year_end) == []

    lines = [
        f"# Next runs in {YEAR} (Europe/Brussels)",
        "",
        "| deployment | runs in the year | first runs |",
        "|---|---|---|",
    ]
    for name in sorted(deployments()):
        dates = run_dates(name, year_start, year_start + dt.timedelta(days=7)) or run_dates(
            name, year_start, year_end
        )
        count = len(run_dates(name, year_start, year_end))
        first = ", ".join(date.strftime("%a %Y-%m-%d %H:%M") for date in dates[:3]) or "on demand"
        lines.append(f"| {name} | {count if count < 1000 else 'hourly'} | {first} |")
    report = "\n".join(lines) + "\n"
    print(report)
    (test_output_dir / f"schedule-{YEAR}.md").write_text(report)
