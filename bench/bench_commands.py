"""Benchmark: the commands of the reference round (examples/escp4i, 23 partnerships), each timed as a user runs it
(`consult ...` in a fresh process, wall time) with the local Prefect server running, next to two baselines
measured in the same run:

- cold: a flow command again with CONSULT_WARM=0, on a copy of the database as it was before the command: in a
  fresh interpreter that imports Prefect, Great Expectations and pandas itself, rather than in a child of the
  warm command process that `consult server start` starts (consult/warm.py), which is the default path (wall);

- plain: the same plain functions the flow's tasks call, in a fresh interpreter, without Prefect (ingest,
  publish; a database-only command is its own plain function);
- bare flow: a Prefect flow of as many no-op tasks as the command's flow ran, in a fresh interpreter, against
  the same server;
- import floor: a fresh interpreter importing the command line (`import consult.cli`) and nothing else, what
  any command pays before it starts working (the context for the database-only commands).

Goals (from issue 15): ingest and publish within 1.5x of the bare flow and under 3 s, judged on the default
(warm) path; database-only commands under 1 s. Each repeat runs the round on a fresh SQLite database (every
round in the one data folder of the local server, so that its warm process serves them); figures are medians
over the repeats.

The Prefect server: PREFECT_API_URL when set (then no warm process: wall is cold, and no cold column), else a local server and its
warm process started in a temporary data folder by `consult server start`, and stopped at the end.

Usage: .venv/bin/python bench/bench_commands.py [--repeat N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples" / "escp4i"
CONSULT = str(Path(sys.executable).with_name("consult"))

# The reference round, in the order operations staff run it (README "Running a round"). `flow`: runs a flow.
ROUND = [
    ("db upgrade", ["db", "upgrade"], False),
    ("panel import", ["panel", "import", str(EXAMPLES / "panel.csv")], False),
    ("round open", ["round", "open", "2019", "--questionnaire", str(EXAMPLES / "questionnaire-2019.yaml"),
                    "--closes-on", "2019-06-30"], False),
    ("round participants", ["round", "participants", "2019", "--format", "limesurvey"], False),
    ("invite", ["invite", "2019"], True),
    ("ingest", ["ingest", "2019", str(EXAMPLES / "responses-2019.csv")], True),
    ("remind", ["remind", "2019", "--force"], True),
    ("outbox", ["outbox", "2019"], False),
    ("quarantine list", ["quarantine", "list", "2019"], False),
    ("files list", ["files", "list", "2019"], False),
    ("indicators", ["indicators", "2019"], False),
    ("round close", ["round", "close", "2019"], False),
    ("publish", ["publish", "2019"], True),
]
FLOW_NAMES = {"invite": "send-invitations", "ingest": "ingest-responses", "remind": "send-reminders",
              "publish": "compute-and-publish"}
QUICK = {"db upgrade", "panel import", "round open", "ingest", "outbox", "publish"}
GOAL_FLOW = {"ingest", "publish"}  # within 1.5x of the bare flow and under 3 s
FLOW_RATIO_GOAL = 1.5
FLOW_SECONDS_GOAL = 3.0
DATABASE_ONLY_SECONDS_GOAL = 1.0

# The plain functions each flow's tasks call, without Prefect (argv: year, output folder).
PLAIN = {
    "ingest": """
import sys
from consult.ingest import dq_report, pipeline
from consult.settings import get_settings
settings, year, paths = get_settings(), int(sys.argv[1]), sys.argv[3:]
files = pipeline.read_files(settings, year, paths)
matched = pipeline.match_files(settings, year, files)
validated = pipeline.validate_files(settings, year, matched)
docs = pipeline.write_data_docs(settings, year, validated)
summary = pipeline.store_files(settings, year, validated)
dq_report.write_report(settings.output_dir, year, dq_report.markdown_report(summary, validated, docs))
""",
    "publish": """
import sys
from pathlib import Path
from consult.indicators import compute_report, store_report
from consult.publish import publish_report
from consult.settings import get_settings
from db.engine import get_engine, require_schema, session_scope
settings, year = get_settings(), int(sys.argv[1])
engine = get_engine(settings.resolved_database_url)
require_schema(engine)
with session_scope(engine) as session:
    report = compute_report(session, year)
    store_report(session, report)
with session_scope(engine) as session:
    publish_report(session, report, Path(sys.argv[2]), flow_run_id=None)
""",
}

# A flow of N no-op tasks, called one after another as the command's flow calls its stages, without heartbeats
# as a command runs its flows (consult.cli_common.foreground_prefect).
BARE_FLOW = """
import sys
from prefect import flow, task
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

@task
def stage(i: int) -> int:
    return i

@flow(name="bare-flow")
def bare(n: int) -> int:
    return sum(stage(i) for i in range(n))

with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
    bare(int(sys.argv[1]))
"""


FLOOR = "import consult.cli"

# What a command's own work imports besides the command line (and Prefect, for a flow): the time of importing it
# in a fresh interpreter that has already imported those (what every command, and the bare flow, import anyway).
# With the bare flow (or the import floor), the least that command can take here before any work (see floors()).
LIBRARIES_TIMER = """
import sys, time
import consult.cli
if sys.argv[2] == "flow":
    import prefect
began = time.perf_counter()
exec(sys.argv[1])
print(time.perf_counter() - began)
"""
LIBRARIES = {
    "ingest": ("pandas, Great Expectations",
               ("import pandas; from consult.ingest.gx_import import import_great_expectations; "
                "import_great_expectations()")),
    "publish": ("pandas, Jinja2", "import pandas, jinja2"),
    "indicators": ("pandas", "import pandas"),  # a database-only command that computes with pandas
}


@dataclass
class Figures:
    wall: list[float]
    plain: list[float]
    bare: list[float]
    tasks: int | None = None
    libraries: list[float] | None = None
    cold: list[float] = field(default_factory=list)


def run(args: list[str], env: dict[str, str], cwd: Path) -> float:
    began = time.perf_counter()
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return elapsed


def latest_flow_run_tasks(api_url: str, flow_name: str) -> int:
    """Task runs of the most recent run of ``flow_name`` (what the command just ran)."""
    runs = httpx.post(f"{api_url}/flow_runs/filter", json={
        "sort": "EXPECTED_START_TIME_DESC", "limit": 1, "flows": {"name": {"any_": [flow_name]}},
    }, timeout=10).json()
    count = httpx.post(f"{api_url}/task_runs/count", json={"flow_runs": {"id": {"any_": [runs[0]["id"]]}}},
                       timeout=10).json()
    return int(count)


def start_local_server(data_dir: Path, env: dict[str, str]) -> str:
    result = subprocess.run([CONSULT, "server", "start"], env={**env, "CONSULT_DATA_DIR": str(data_dir)},
                            capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise SystemExit(f"could not start the local Prefect server: {result.stderr.strip()}")
    state = json.loads((data_dir / "prefect" / "server.json").read_text())
    return f"{state['url']}/api"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="Fresh databases to run the round on (medians).")
    parser.add_argument("--quick", action="store_true", help="Only " + ", ".join(sorted(QUICK)) + " (smoke test).")
    options = parser.parse_args()
    commands = [entry for entry in ROUND if not options.quick or entry[0] in QUICK]

    root = Path(tempfile.mkdtemp(prefix="bench-commands-"))
    base_env = {key: value for key, value in os.environ.items() if not key.startswith("CONSULT_")}
    base_env |= {"CONSULT_TOKEN_SECRET": "bench-secret-" + "0" * 51, "CONSULT_MAIL_BACKEND": "mailbox",
                 "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    server_dir = root / "server"
    api_url = base_env.get("PREFECT_API_URL")
    started_here = not api_url
    try:
        if started_here:
            api_url = start_local_server(server_dir, base_env)
        base_env["PREFECT_API_URL"] = api_url
        figures = {name: Figures([], [], []) for name, _, _ in commands}
        floor: list[float] = []
        for repeat in range(options.repeat):
            floor.append(run([sys.executable, "-c", FLOOR], base_env, root))
            one_round(root / f"round-{repeat}", commands, figures, base_env | {"CONSULT_DATA_DIR": str(server_dir)},
                      api_url, started_here)
        report(figures, commands, api_url, started_here, options.repeat, statistics.median(floor))
        flow_runs = options.repeat * sum(1 for _, _, is_flow in commands if is_flow)
        log = server_dir / "prefect" / "warm.log"
        served = log.read_text().count("running `consult ") if log.exists() else 0
        print(f"\nserved by the warm command process (its log): {served} of the {flow_runs} flow commands timed as "
              f"wall" + ("" if started_here else " (PREFECT_API_URL given: no local server, no warm process)"))
    finally:
        if started_here:
            subprocess.run([CONSULT, "server", "stop"], env={**base_env, "CONSULT_DATA_DIR": str(server_dir)},
                           capture_output=True, timeout=120, check=False)
        shutil.rmtree(root, ignore_errors=True)


def one_round(folder: Path, commands: list[tuple[str, list[str], bool]], figures: dict[str, Figures],
              base_env: dict[str, str], api_url: str, started_here: bool) -> None:
    folder.mkdir(parents=True)
    database = folder / "consult.db"
    env = base_env | {"CONSULT_DATABASE_URL": f"sqlite:///{database}", "CONSULT_OUTPUT_DIR": str(folder / "output"),
                      "CONSULT_MAILBOX_DIR": str(folder / "mailbox")}
    for name, args, is_flow in commands:
        plain_copy = folder / f"plain-{name.replace(' ', '-')}.db"
        cold_copy = folder / f"cold-{name.replace(' ', '-')}.db"
        if name in PLAIN:
            shutil.copyfile(database, plain_copy)  # the plain functions start from the same state, on a copy
        # The cold command, when there is a warm process to compare it with (none when PREFECT_API_URL is given:
        # then every command is cold, and its wall time is the cold figure).
        cold_too = is_flow and started_here
        if cold_too:
            shutil.copyfile(database, cold_copy)  # and so does the cold command
        figures[name].wall.append(run([CONSULT, *args], env, folder))
        if cold_too:
            cold_env = env | {"CONSULT_WARM": "0", "CONSULT_DATABASE_URL": f"sqlite:///{cold_copy}",
                              "CONSULT_OUTPUT_DIR": str(folder / "cold-output"),
                              "CONSULT_MAILBOX_DIR": str(folder / "cold-mailbox")}
            figures[name].cold.append(run([CONSULT, *args], cold_env, folder))
        if is_flow:
            figures[name].tasks = latest_flow_run_tasks(api_url, FLOW_NAMES[name])
            figures[name].bare.append(run([sys.executable, "-c", BARE_FLOW, str(figures[name].tasks)], env, folder))
        if name in LIBRARIES:
            timed = subprocess.run([sys.executable, "-c", LIBRARIES_TIMER, LIBRARIES[name][1],
                                    "flow" if is_flow else "database"], env=env, cwd=REPO_ROOT,
                                   capture_output=True, text=True, timeout=600, check=True)
            figures[name].libraries = (figures[name].libraries or []) + [float(timed.stdout.strip().splitlines()[-1])]
        if name in PLAIN:
            plain_env = env | {"CONSULT_DATABASE_URL": f"sqlite:///{plain_copy}",
                               "CONSULT_OUTPUT_DIR": str(folder / "plain-output")}
            plain_env.pop("PREFECT_API_URL")
            extra = args[2:] if name == "ingest" else []
            figures[name].plain.append(run([sys.executable, "-c", PLAIN[name], "2019", str(folder / "plain-output"),
                                            *extra], plain_env, REPO_ROOT))


def report(figures: dict[str, Figures], commands: list[tuple[str, list[str], bool]], api_url: str,
           started_here: bool, repeats: int, floor: float) -> None:
    where = "a local server started for the bench" if started_here else "PREFECT_API_URL"
    print(f"Prefect server: {api_url} ({where}); {repeats} repeat(s) on fresh SQLite databases; medians, seconds")
    print("baselines: plain = the same functions without Prefect, fresh interpreter; bare = a bare Prefect flow of "
          "as many tasks against the same server, fresh interpreter")
    print("wall: the default path (a flow command served by the warm command process); cold: the same flow command "
          "with CONSULT_WARM=0 (fresh interpreter)")
    print(f"import floor (`python -c '{FLOOR}'`): {floor:.2f} s; wall/floor shown for database-only commands")
    header = (f"{'command':<20} {'wall':>6} {'plain':>6} {'bare flow':>12} {'wall/bare':>9} {'wall/plain':>10} "
              f"{'cold':>6} {'cold/bare':>9}  goal (on wall)")
    print(header)
    print("-" * len(header))
    for name, _, is_flow in commands:
        item = figures[name]
        wall = statistics.median(item.wall)
        plain = statistics.median(item.plain) if item.plain else None
        bare = statistics.median(item.bare) if item.bare else None
        bare_text = f"{bare:.2f} ({item.tasks}t)" if bare is not None else "-"
        ratio = f"{wall / bare:.2f}x" if bare else "-"
        plain_ratio = f"{wall / plain:.2f}x" if plain else "-"
        if name in GOAL_FLOW and bare:
            met = wall <= FLOW_RATIO_GOAL * bare and wall < FLOW_SECONDS_GOAL
            goal = f"<= {FLOW_RATIO_GOAL}x bare and < {FLOW_SECONDS_GOAL:.0f} s: {'met' if met else 'NOT met'}"
        elif not is_flow:
            goal = (f"< {DATABASE_ONLY_SECONDS_GOAL:.0f} s: {'met' if wall < DATABASE_ONLY_SECONDS_GOAL else 'NOT met'}"
                    f" ({wall / floor:.2f}x the import floor)")
        else:
            goal = ""
        plain_text = f"{plain:.2f}" if plain is not None else "-"
        cold = statistics.median(item.cold) if item.cold else None
        cold_text = f"{cold:.2f}" if cold is not None else "-"
        cold_ratio = f"{cold / bare:.2f}x" if cold is not None and bare else "-"
        print(f"{name:<20} {wall:>6.2f} {plain_text:>6} {bare_text:>12} {ratio:>9} {plain_ratio:>10} {cold_text:>6} "
              f"{cold_ratio:>9}  {goal}")
    floors(figures, commands, floor)


def floors(figures: dict[str, Figures], commands: list[tuple[str, list[str], bool]], floor: float) -> None:
    """Where a command's goal lies against what it cannot avoid here: for a flow, the bare flow (Prefect's import,
    its flow and task runs against the server, its exit); for a database-only command, the import floor; plus the
    import of the libraries its work needs."""
    lines = []
    for name, _, is_flow in commands:
        item = figures[name]
        if not is_flow and item.libraries:
            wall, libraries = statistics.median(item.wall), statistics.median(item.libraries)
            least = floor + libraries
            verdict = "met" if wall < DATABASE_ONLY_SECONDS_GOAL else f"NOT met by {wall - DATABASE_ONLY_SECONDS_GOAL:.2f} s"
            lines.append(f"{name}: goal {DATABASE_ONLY_SECONDS_GOAL:.0f} s, {verdict}; floor here: the import floor "
                         f"{floor:.2f} s + importing {LIBRARIES[name][0]} {libraries:.2f} s = {least:.2f} s before any "
                         f"work; the command spends {wall - least:.2f} s more")
        if name not in GOAL_FLOW or not item.bare or not item.libraries:
            continue
        wall, bare = statistics.median(item.wall), statistics.median(item.bare)
        libraries = statistics.median(item.libraries)
        least = bare + libraries
        ratio_goal = FLOW_RATIO_GOAL * bare
        ratio_verdict = "met" if wall <= ratio_goal else f"NOT met by {wall - ratio_goal:.2f} s"
        seconds_verdict = ("met" if wall < FLOW_SECONDS_GOAL else f"NOT met by {wall - FLOW_SECONDS_GOAL:.2f} s"
                           + (f" (the bare flow alone takes {bare:.2f} s here: no Prefect flow run from a fresh "
                              f"interpreter can meet it on this machine)" if bare >= FLOW_SECONDS_GOAL else ""))
        lines.append(f"{name}: within {FLOW_RATIO_GOAL}x bare ({ratio_goal:.2f} s): {ratio_verdict}; under "
                     f"{FLOW_SECONDS_GOAL:.0f} s: {seconds_verdict}")
        if item.cold:
            cold = statistics.median(item.cold)
            cold_met = cold <= ratio_goal and cold < FLOW_SECONDS_GOAL
            lines.append(f"  cold (CONSULT_WARM=0): {cold:.2f} s = {cold / bare:.2f}x bare: "
                         f"{'would meet' if cold_met else 'would not meet'} the goal; warm saves {cold - wall:.2f} s")
        fresh = statistics.median(item.cold) if item.cold else wall  # what a fresh interpreter took
        lines.append(f"  floor of a fresh interpreter here: bare flow {bare:.2f} s + importing {LIBRARIES[name][0]} "
                     f"{libraries:.2f} s (after Prefect) = {least:.2f} s ({least / bare:.2f}x bare) before any work; "
                     f"the cold command spends {fresh - least:.2f} s beyond it (the work, the command line's own "
                     f"start-up, task hand-offs); the warm one starts with those imports done")
    if lines:
        print("\nFloors (same run):")
        for line in lines:
            print(line)


if __name__ == "__main__":
    main()
