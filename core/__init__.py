"""lorabox's core: what the HTTP edge and the worker share, HTTP-free and Celery-thin.

The database (tables, sessions, migrations), the settings, domain errors, users, jobs
(validate, submit, claim, recover, artifacts), datasets, the model catalog and the webhook
outbox. Functions take a session and raise :mod:`core.errors`; ``api`` maps those to HTTP and
``worker`` to job outcomes. See docs/architecture.md.
"""
