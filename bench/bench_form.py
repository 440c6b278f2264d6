"""Benchmark: N partnerships (default 200) submitting the response form at once, on SQLite and PostgreSQL.

Each run starts the real application (`consult.form.app`) on a real uvicorn server, has every partnership load
its form (its CSRF token and cookie) and then post its answers all at once, and checks that every submission is
stored exactly once (one accepted form response and one kept file per partnership, nothing else). Next to it,
in the same run, the same concurrent posts go to a bare FastAPI endpoint on the same kind of server that only
parses the body: the floor of the web stack, so the ratio says what the engine's work costs. Also printed: the
404 of unknown, altered and other round's tokens, whose timings must not tell them apart.

Usage: .venv/bin/python bench/bench_form.py [--partnerships N] [--postgres-admin-url URL] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

QUESTIONNAIRE = REPO_ROOT / "examples" / "escp4i" / "questionnaire-2019.yaml"
SECRET = "bench-form-secret-" + "0" * 46


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def populate(url: str, partnerships: int) -> list[str]:
    """N partnerships with one contact each, and round 2019 open with all of them; returns their tokens."""
    from consult.panel import import_panel
    from consult.rounds import open_round
    from consult.tokens import derive_token
    from db.engine import get_engine, session_scope, upgrade

    upgrade(url)
    with tempfile.TemporaryDirectory() as folder:
        panel = Path(folder) / "panel.csv"
        lines = ["partnership_id,name,acronym,strand,country,contact_first_name,contact_last_name,contact_email,language"]
        lines += [f"P{i:05d},Partnership {i},P{i},{1 + i % 2},DE,Ana,Example,contact{i}@cluster.example,"
                  f"{'fr' if i % 10 == 0 else 'en'}" for i in range(partnerships)]
        panel.write_text("\n".join(lines) + "\n", encoding="utf-8")
        with session_scope(get_engine(url)) as session:
            import_panel(session, panel)
            open_round(session, year=2019, questionnaire_path=QUESTIONNAIRE, token_secret=SECRET.encode(),
                       closes_on=dt.date.today() + dt.timedelta(days=30))
    return [derive_token(SECRET.encode(), 2019, f"P{i:05d}") for i in range(partnerships)]


class Server:
    """An ASGI app on a real uvicorn server in a thread."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, access_log=False,
                                                    log_level="warning", backlog=4096))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def bare_app():  # type: ignore[no-untyped-def]
    """The floor: a FastAPI endpoint that reads and parses the same form body and answers with a redirect."""
    import urllib.parse

    app = FastAPI()

    @app.post("/r/{token}")
    async def post(request: Request, token: str) -> RedirectResponse:
        fields = urllib.parse.parse_qs((await request.body()).decode(), keep_blank_values=True)
        assert fields
        return RedirectResponse(f"/r/{token}?sent=1", status_code=303)

    return app


def answers(number: int) -> dict[str, object]:
    return {"markets": ["US", "JP", "CA"][: 1 + number % 3], "sme_involvement": ["knowledge_sharing", "joint_events"],
            "cooperation_agreements": str(number % 50), "business_missions_planned": "yes" if number % 2 else "no",
            "sme_members": str(10 + number % 90), "success_story": f"Story {number}: <b>a MoU</b> & more",
            "action": "submit"}


async def load_forms(base: str, tokens: list[str]) -> list[tuple[httpx.AsyncClient, str]]:
    """Each partnership opens its form: its own client (cookie jar) and the form's CSRF token."""
    clients = []
    for token in tokens:
        # No keep-alive: a person posts minutes after loading the page, on a new connection (and the server
        # would have closed an idle one meanwhile), as the baseline's posts do.
        client = httpx.AsyncClient(base_url=base, timeout=600,
                                   limits=httpx.Limits(max_connections=1, max_keepalive_connections=0))
        page = await client.get(f"/r/{token}")
        assert page.status_code == 200, page.status_code
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf
        clients.append((client, csrf.group(1)))
    return clients


async def post_all(base: str, tokens: list[str], forms: list[tuple[httpx.AsyncClient, str]] | None) -> list[float]:
    """Every partnership posts at once; the latency of each post (to its 303), in seconds."""
    own = forms is None
    if forms is None:
        forms = [(httpx.AsyncClient(base_url=base, timeout=600), "") for _ in tokens]
    start = asyncio.Event()

    async def one(number: int, token: str, client: httpx.AsyncClient, csrf: str) -> float:
        await start.wait()
        began = time.perf_counter()
        response = await client.post(f"/r/{token}", data={**answers(number), "csrf_token": csrf})
        assert response.status_code == 303, (response.status_code, response.text[:300])
        return time.perf_counter() - began

    tasks = [asyncio.create_task(one(n, token, client, csrf)) for n, (token, (client, csrf))
             in enumerate(zip(tokens, forms, strict=True))]
    await asyncio.sleep(0.2)
    start.set()
    latencies = await asyncio.gather(*tasks)
    if own:
        for client, _ in forms:
            await client.aclose()
    return list(latencies)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def check_stored_once(url: str, partnerships: int) -> str:
    from sqlalchemy import text

    from db.engine import get_engine

    with get_engine(url).connect() as connection:
        per = connection.execute(text(
            "SELECT r.partnership_id, count(*), sum(CASE WHEN r.status = 'accepted' THEN 1 ELSE 0 END) "
            "FROM responses r GROUP BY r.partnership_id")).all()
        files = connection.scalar(text("SELECT count(*) FROM ingested_files WHERE layout = 'form'"))
    assert len(per) == partnerships, f"{len(per)} partnerships have a response, expected {partnerships}"
    assert all(count == 1 and accepted == 1 for _, count, accepted in per), "a submission stored twice or not accepted"
    assert files == partnerships, f"{files} form files kept, expected {partnerships}"
    return f"every submission stored exactly once: {partnerships} accepted form responses, {files} kept files"


def not_found_timings(base: str, token: str, *, repeat: int = 60) -> dict[str, float]:
    """Median time of the 404 for an unknown, an altered and another round's token (from a fresh address each)."""
    from consult.tokens import derive_token

    kinds = {"unknown": "x" * len(token), "altered": token[:-1] + ("A" if token[-1] != "A" else "B"),
             "other round": derive_token(SECRET.encode(), 2018, "P00000")}
    timings: dict[str, list[float]] = {kind: [] for kind in kinds}
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(repeat):
            for kind, value in kinds.items():
                began = time.perf_counter()
                assert client.get(f"/r/{value}").status_code == 404
                timings[kind].append(time.perf_counter() - began)
    return {kind: statistics.median(values) for kind, values in timings.items()}


def run(label: str, url: str, partnerships: int) -> None:
    from consult.form.app import create_app
    from consult.settings import Settings

    # One more partnership answers first, unmeasured: the first submission of a process imports and warms up
    # Great Expectations (seconds), which no later one pays.
    tokens = populate(url, partnerships + 1)
    warm_up = [tokens.pop()]
    with tempfile.TemporaryDirectory() as data:
        # The 404 timings need many failed lookups from one address: the limit is raised for the bench.
        settings = Settings(database_url=url, data_dir=Path(data), token_secret=SECRET,
                            form_failed_lookups=1_000_000)
        with Server(bare_app()) as bare_base, Server(create_app(settings)) as form_base:
            floor = asyncio.run(post_all(bare_base, tokens, None))

            async def form_run(tokens: list[str]) -> list[float]:
                forms = await load_forms(form_base, tokens)
                try:
                    return await post_all(form_base, tokens, forms)
                finally:
                    for client, _ in forms:
                        await client.aclose()

            asyncio.run(form_run(warm_up))
            form = asyncio.run(form_run(tokens))
            floor_again = asyncio.run(post_all(bare_base, tokens, None))
            misses = not_found_timings(form_base, tokens[0])
    floor += floor_again
    print(f"== {label}: {partnerships} partnerships posting at once")
    print(f"  bare FastAPI endpoint (baseline, same server, same bodies): p50 {1000 * percentile(floor, .5):8.1f} ms"
          f"  p95 {1000 * percentile(floor, .95):8.1f} ms")
    print(f"  response form (validate with the ingest's suite, store):   p50 {1000 * percentile(form, .5):8.1f} ms"
          f"  p95 {1000 * percentile(form, .95):8.1f} ms")
    print(f"  ratio form/bare: p50 x{percentile(form, .5) / percentile(floor, .5):.0f}, "
          f"p95 x{percentile(form, .95) / percentile(floor, .95):.0f}; "
          f"all {partnerships} stored within {max(form):.1f} s ({partnerships / max(form):.1f} submissions/s)")
    print(f"  {check_stored_once(url, partnerships + 1)} (one of them the unmeasured warm-up)")
    spread = max(misses.values()) / min(misses.values())
    print("  404 medians: " + ", ".join(f"{kind} {1000 * value:.2f} ms" for kind, value in misses.items())
          + f" (largest/smallest x{spread:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partnerships", type=int, default=200)
    parser.add_argument("--postgres-admin-url",
                        default=os.environ.get("CONSULT_TEST_POSTGRES_URL",
                                               "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    from sqlalchemy import create_engine, text

    from db.engine import get_engine

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        run("SQLite", url, args.partnerships)
        get_engine(url).dispose()
    if args.skip_postgres:
        return
    name = f"bench_form_{uuid.uuid4().hex[:10]}"
    admin = create_engine(args.postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        run("PostgreSQL", url, args.partnerships)
    finally:
        get_engine(url).dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
