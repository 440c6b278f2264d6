"""`consult serve`: every deployment of deployments/prefect.yaml served from one process (Prefect's `serve`),
for a small team on one machine. The same file drives `prefect deploy` for workers, so both ways run the same
jobs on the same schedules with the same limits.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from consult.errors import ConsultError
from consult.runners import SECRET_BLOCKS
from consult.settings import REPO_ROOT

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

PREFECT_YAML = REPO_ROOT / "deployments" / "prefect.yaml"


@dataclass(frozen=True)
class ScheduleSpec:
    cron: str
    timezone: str
    day_or: bool = True


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment as written in prefect.yaml."""

    name: str
    entrypoint: str
    description: str
    tags: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: list[ScheduleSpec] = field(default_factory=list)
    concurrency_limit: int = 1
    collision_strategy: str = "ENQUEUE"

    @property
    def module_entrypoint(self) -> tuple[str, str]:
        """`flows/scheduled.py:open_yearly_round` -> ("flows.scheduled", "open_yearly_round")."""
        path, _, function = self.entrypoint.partition(":")
        return path.removesuffix(".py").replace("/", "."), function


def load_deployment_specs(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConsultError(f"{path}: cannot read the deployments: {error}") from None
    specs = []
    for entry in config.get("deployments") or []:
        limit = entry.get("concurrency_limit") or {}
        if isinstance(limit, int):
            limit = {"limit": limit}
        specs.append(
            DeploymentSpec(
                name=entry["name"],
                entrypoint=entry["entrypoint"],
                description=" ".join(str(entry.get("description", "")).split()),
                tags=list(entry.get("tags") or []),
                parameters=dict(entry.get("parameters") or {}),
                schedules=[
                    ScheduleSpec(
                        cron=item["cron"], timezone=item["timezone"], day_or=item.get("day_or", True)
                    )
                    for item in entry.get("schedules") or []
                ],
                concurrency_limit=int(limit.get("limit", 1)),
                collision_strategy=str(limit.get("collision_strategy", "ENQUEUE")),
            )
        )
    return specs


def runner_deployments(specs: list[DeploymentSpec]) -> list[RunnerDeployment]:
    """The deployments as Prefect's `serve` takes them; flows are imported as modules of this package so that
    the served runs find them from any working directory."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    deployments = []
    for spec in specs:
        module_name, function = spec.module_entrypoint
        flow = getattr(importlib.import_module(module_name), function)
        deployments.append(
            flow.to_deployment(
                name=spec.name,
                description=spec.description,
                tags=spec.tags,
                parameters=spec.parameters,
                schedules=[
                    Cron(item.cron, timezone=item.timezone, day_or=item.day_or) for item in spec.schedules
                ],
                concurrency_limit=ConcurrencyLimitConfig(
                    limit=spec.concurrency_limit,
                    collision_strategy=ConcurrencyLimitStrategy(spec.collision_strategy),
                ),
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return deployments


def serve_all(limit: int | None = None, path: Path = PREFECT_YAML) -> None:
    """Serve every deployment until interrupted; ``limit`` caps how many runs execute at once."""
    from prefect import serve

    serve(*runner_deployments(load_deployment_specs(path)), limit=limit)


def secrets_instructions() -> str:
    """How to give workers the SendGrid key and the database URL, without ever putting them in a parameter."""
    lines = [
        "Secrets reach flow runs as environment variables of the worker (or of `consult serve`), or from",
        "Prefect Secret blocks when the variable is not set. Never as deployment or task parameters.",
        "",
        "1. Environment variables on each worker machine (e.g. a systemd EnvironmentFile readable by the",
        "   worker's user only, mode 600):",
        "",
    ]
    examples = {
        "CONSULT_SENDGRID_API_KEY": "SG.xxxxxxxx",
        "CONSULT_DATABASE_URL": "postgresql+psycopg://consult:PASSWORD@db.internal:5432/consult",
    }
    lines += [f"     {variable}={examples[variable]}" for variable in SECRET_BLOCKS]
    lines += [
        "",
        "2. Or Prefect Secret blocks, kept by the Prefect server (masked in the UI) and read by each flow",
        "   run when it starts:",
        "",
    ]
    for variable, block in SECRET_BLOCKS.items():
        lines.append(
            f'     python -c "from prefect.blocks.system import Secret; import getpass; '
            f"Secret(value=getpass.getpass('{variable}: ')).save('{block}', overwrite=True)\""
        )
    lines += [
        "",
        "   An environment variable, when set, wins over the block.",
        "",
        "The Prefect server's own database (not the consultation database) is set on the server machine:",
        "",
        "     PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://prefect:PASSWORD@db.internal:5432/prefect",
    ]
    return "\n".join(lines)
