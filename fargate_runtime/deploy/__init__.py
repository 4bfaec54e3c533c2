"""Deploy tooling, apart from the runtime: the task-definition linter and the Fargate size table.

``taskdef`` checks a task definition against the Fargate production checklist and this runtime's
settings (``fargate-runtime check-taskdef``); ``sizing`` picks the smallest valid Fargate size
for a measured peak and prices it (``fargate-runtime size``). Nothing in the runtime imports them.
"""

from __future__ import annotations

__all__: list[str] = []
