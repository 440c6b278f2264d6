"""The reference demo: the ESCP-4i 2019 and 2020 rounds, end to end, on the embedded defaults."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from consult.ingest.dq_report import report_path
from consult.ingest.pipeline import data_docs_dir
from consult.settings import get_settings
from flows.consultation_round import consultation_round
from tasks.rounds import import_panel_task, upgrade_database_task

# The reference rounds: closing dates as in the ECCP's first two consultations.
REFERENCE_ROUNDS = {2019: "2019-06-30", 2020: "2020-06-30"}


@flow(name="reference-demo", log_prints=True)
def reference_demo(examples_dir: str, out_dir: str | None = None) -> dict[int, dict[str, str]]:
    upgrade_database_task()
    import_panel_task(str(Path(examples_dir) / "panel.csv"))
    published: dict[int, dict[str, str]] = {}
    for year, closes_on in REFERENCE_ROUNDS.items():
        result = consultation_round(
            year,
            questionnaire=str(Path(examples_dir) / f"questionnaire-{year}.yaml"),
            response_files=[str(Path(examples_dir) / f"responses-{year}.csv")],
            closes_on=closes_on,
            out_dir=out_dir,
        )
        published[year] = result.paths_by_label() | data_quality_paths(year)
    return published


def data_quality_paths(year: int) -> dict[str, str]:
    settings = get_settings()
    return {
        "data-quality report": str(report_path(settings.output_dir, year)),
        "Data Docs": str(data_docs_dir(settings, year) / "index.html"),
    }


def run_demo(examples_dir: Path, out_dir: Path | None) -> dict[int, dict[str, str]]:
    return reference_demo(str(examples_dir), str(out_dir) if out_dir else None)
