"""Django settings for the django-post_office peer: SQLite, SMTP to the local sink.

The database path and the sink's port come from the environment (set by run.py).
SQLite runs with the same durability settings as Postroom's: WAL, synchronous=FULL.
"""

from __future__ import annotations

import os

SECRET_KEY = "benchmark-only-not-a-secret"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS: list[str] = []
INSTALLED_APPS = ["django.contrib.contenttypes", "post_office"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# mail.send() renders subject and bodies as Django templates
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("POST_OFFICE_BENCH_DB", "post_office_bench.sqlite3"),
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
            "timeout": 30,
        },
    }
}

# mail.send() queues; send_queued_mail delivers through Django's SMTP backend
EMAIL_BACKEND = "post_office.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("POST_OFFICE_BENCH_PORT", "2525"))
EMAIL_USE_TLS = False
EMAIL_USE_SSL = False
EMAIL_TIMEOUT = 30

POST_OFFICE = {
    "BACKENDS": {"default": "django.core.mail.backends.smtp.EmailBackend"},
    "BATCH_SIZE": 1000,
    "DEFAULT_PRIORITY": "medium",
}
