"""The job side of the workers: the runner, the local worker loop and the Celery app."""
