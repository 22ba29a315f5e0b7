"""Observed containers -> a plan of create / recreate / start / keep. Pure logic.

Tested as text (str(plan)), without Docker, as docker compose tests its convergence.
"""

from __future__ import annotations

from dataclasses import dataclass

from qbctl.stack.spec import ServiceSpec


@dataclass(frozen=True)
class Observed:
    service: str
    container_id: str
    state: str  # running | exited | created | restarting | paused | dead
    config_hash: str
    image_id: str
    health: str | None = None  # healthy | unhealthy | starting | None


@dataclass(frozen=True)
class Step:
    service: str
    action: str  # create | recreate | start | keep
    reason: str

    def __str__(self) -> str:
        return f"{self.action:<8} {self.service}: {self.reason}"


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]

    def __str__(self) -> str:
        return "\n".join(str(s) for s in self.steps)

    def changes(self) -> list[Step]:
        return [s for s in self.steps if s.action != "keep"]


def make_plan(desired: list[ServiceSpec], observed: dict[str, Observed], image_ids: dict[str, str]) -> Plan:
    steps = []
    for spec in desired:
        have = observed.get(spec.name)
        want_image = image_ids.get(spec.image)
        if have is None:
            steps.append(Step(spec.name, "create", "no container"))
        elif have.config_hash != spec.config_hash():
            steps.append(Step(spec.name, "recreate", "settings changed"))
        elif want_image and have.image_id != want_image:
            steps.append(Step(spec.name, "recreate", f"image {spec.image} changed"))
        elif have.state in ("dead", "removing"):
            steps.append(Step(spec.name, "recreate", f"container is {have.state}"))
        elif have.state in ("created", "configured"):  # never started (a start that failed): make it anew
            steps.append(Step(spec.name, "recreate", "container was created but never started"))
        elif have.state != "running":
            steps.append(Step(spec.name, "start", f"container is {have.state}"))
        else:
            steps.append(Step(spec.name, "keep", "running, unchanged"))
    return Plan(tuple(steps))


def observe(eng, project: str) -> dict[str, Observed]:
    """This project's containers by service, as the planner sees them (one list call to the engine)."""
    from qbctl.engine.labels import LABEL_CONFIG

    return {
        c.service: Observed(c.service, c.id, c.state, c.labels.get(LABEL_CONFIG, ""), c.image_id, c.health)
        for c in eng.containers(project)
        if c.service
    }
