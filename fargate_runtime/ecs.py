"""The ECS task's identity, read once at start from the task metadata endpoint v4.

``ECS_CONTAINER_METADATA_URI_V4`` is set by the ECS agent in every container of a task on
Fargate platform 1.4.0+. Off ECS it is absent and the runtime carries on without an identity.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["METADATA_ENV", "TaskIdentity", "owner_id", "read_task_identity"]

logger = logging.getLogger("fargate_runtime.ecs")

METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"
# The endpoint is link-local and answers in milliseconds; a slow one must not delay start.
DEFAULT_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class TaskIdentity:
    """Who this task is, for log lines and idempotency owner ids."""

    task_arn: str
    cluster: str | None = None
    family: str | None = None
    revision: str | None = None
    availability_zone: str | None = None
    launch_type: str | None = None

    @property
    def task_id(self) -> str:
        """The last part of the task ARN."""
        return self.task_arn.rsplit("/", 1)[-1]

    def log_fields(self) -> dict[str, str]:
        """Fields added to every log line."""
        fields = {
            "ecs_task_arn": self.task_arn,
            "ecs_cluster": self.cluster,
            "ecs_family": self.family,
            "ecs_revision": self.revision,
            "ecs_availability_zone": self.availability_zone,
        }
        return {name: value for name, value in fields.items() if value}

    def resource_attributes(self) -> dict[str, str]:
        """OpenTelemetry resource attributes (semantic conventions for AWS ECS and cloud)."""
        attributes = {
            "cloud.provider": "aws",
            "cloud.platform": "aws_ecs",
            "aws.ecs.task.arn": self.task_arn,
            "aws.ecs.cluster.arn": self.cluster,
            "aws.ecs.task.family": self.family,
            "aws.ecs.task.revision": self.revision,
            "aws.ecs.launchtype": self.launch_type.lower() if self.launch_type else None,
            "cloud.availability_zone": self.availability_zone,
        }
        return {name: value for name, value in attributes.items() if value}

    @classmethod
    def from_document(cls, document: Any) -> TaskIdentity:
        """Build from the v4 ``/task`` JSON document; raise ValueError when it is not one."""
        if not isinstance(document, dict) or not isinstance(document.get("TaskARN"), str):
            # ValueError, like the JSON decoder's: both mean "not a task metadata document".
            raise ValueError("task metadata has no TaskARN")  # noqa: TRY004

        def text(name: str) -> str | None:
            value = document.get(name)
            return str(value) if value is not None else None

        return cls(
            task_arn=document["TaskARN"],
            cluster=text("Cluster"),
            family=text("Family"),
            revision=text("Revision"),
            availability_zone=text("AvailabilityZone"),
            launch_type=text("LaunchType"),
        )


def _fetch(url: str, timeout_seconds: float) -> Any:
    # The URL comes from the ECS agent's environment variable, not from user input.
    with urllib.request.urlopen(url, timeout=timeout_seconds) as response:  # noqa: S310
        return json.loads(response.read())


async def read_task_identity(
    *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, environ: dict[str, str] | None = None
) -> TaskIdentity | None:
    """Read the task identity, or return None (logged) when off ECS or the endpoint misbehaves."""
    base = (environ if environ is not None else os.environ).get(METADATA_ENV)
    if not base:
        logger.debug("not on ECS: %s is not set", METADATA_ENV)
        return None
    url = base.rstrip("/") + "/task"
    try:
        async with asyncio.timeout(timeout_seconds):
            document = await asyncio.to_thread(_fetch, url, timeout_seconds)
        identity = TaskIdentity.from_document(document)
    except (TimeoutError, OSError, ValueError) as exc:
        logger.warning(
            "task metadata unavailable; continuing without the ECS task identity",
            extra={"url": url, "error": repr(exc)},
        )
        return None
    logger.debug("task identity read", extra=identity.log_fields())
    return identity


def owner_id(identity: TaskIdentity | None = None) -> str:
    """A process-unique owner id for idempotency claims: task id (or host name) and pid."""
    where = identity.task_id if identity is not None else socket.gethostname()
    return f"{where}:{os.getpid()}"
