"""The job system's limits, read from the environment in one place (workers, the pipeline's
watchdog and the broker options all agree on them)."""
from __future__ import annotations

import os


def time_limits() -> tuple[float, float]:
    """(soft, hard) seconds a run may take: ``SPEEDBOOK_TASK_SOFT_LIMIT_S`` (default 1 h), hard = soft + 60."""
    soft = float(os.environ.get("SPEEDBOOK_TASK_SOFT_LIMIT_S", "3600"))
    return soft, soft + 60
