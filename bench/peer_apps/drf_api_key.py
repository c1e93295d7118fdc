"""A minimal Django project protected by djangorestframework-api-key: one
endpoint, ``GET /v1/contacts``, behind ``HasAPIKey`` (clients send
``Authorization: Api-Key <key>``). Settings are in code; the SQLite database
is ``$PEER_DATA_DIR/db.sqlite3``.

``python drf_api_key.py setup`` migrates and prints a new key (created with
the manager's ``create_key``); ``gunicorn drf_api_key:application`` serves.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY=secrets.token_urlsafe(32),
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "rest_framework",
        "rest_framework_api_key",
    ],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(Path(os.environ["PEER_DATA_DIR"]) / "db.sqlite3"),
        }
    },
    # No session or basic authentication to run before the permission, and
    # JSON only (the browsable API would need templates).
    REST_FRAMEWORK={
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework_api_key.permissions.HasAPIKey"],
    },
    USE_TZ=True,
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after setup)
from django.urls import path  # noqa: E402
from rest_framework.decorators import api_view  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.response import Response  # noqa: E402


def contacts(request: Request) -> Response:
    """The protected endpoint (HasAPIKey is the default permission)."""
    return Response({"contacts": []})


urlpatterns = [path("v1/contacts", api_view(["GET"])(contacts))]
application = get_wsgi_application()


def setup() -> str:
    """Migrate the database and create one API key; the key."""
    from django.core.management import call_command
    from rest_framework_api_key.models import APIKey

    call_command("migrate", verbosity=0)
    _, key = APIKey.objects.create_key(name="bench")
    return str(key)


def main(argv: list[str]) -> Any:
    if argv[1:] == ["setup"]:
        print(setup())
    else:
        raise SystemExit(f"usage: {argv[0]} setup")


if __name__ == "__main__":
    main(sys.argv)
