"""Jobs: the Celery app and its thin tasks, the plain pipeline they call, the stale-run
reaper, worker registration, and the ``speedbook`` command line."""
