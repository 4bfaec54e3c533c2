"""``python -m fargate_runtime.cli``: the console script without its entry point (tests, images)."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
