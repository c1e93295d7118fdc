"""A one-file Django app protected by keystile_client.django
(docs/client-django.md).

    pip install 'keystile-client[django]'
    KEYSTILE_URL=http://127.0.0.1:8080 KEYSTILE_SERVICE_KEY=wbk_live_… \\
        python examples/client/django_app.py runserver 9000
    curl -H "Authorization: Bearer $CALLER_KEY" http://127.0.0.1:9000/contacts
"""

from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path


def configure(**keystile: Any) -> None:
    """Django settings for this app; ``keystile`` overrides ``KEYSTILE``'s entries."""
    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret"),
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=["keystile_client.django.KeystileMiddleware"],
        KEYSTILE={
            "BASE_URL": os.environ.get("KEYSTILE_URL", "http://127.0.0.1:8080"),
            "SERVICE_KEY": os.environ.get("KEYSTILE_SERVICE_KEY"),
            "PERMISSION": "read:contacts",
            "EXEMPT_PATHS": ["/healthz"],
            "CACHE_TTL": float(os.environ.get("KEYSTILE_CACHE_TTL", "5")),
            **keystile,
        },
    )


def contacts(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"contacts": [], "key_id": request.keystile.key_id})


def _write_contact(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"created_by": request.keystile.key_id}, status=201)


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _urls() -> list[Any]:
    from keystile_client.django import require_key

    return [
        path("contacts", contacts),
        path("contacts/new", require_key("write:contacts")(_write_contact)),
        path("healthz", healthz),
    ]


def __getattr__(name: str) -> Any:
    # urlpatterns is built when Django asks for it, after settings exist.
    if name == "urlpatterns":
        return _urls()
    raise AttributeError(name)


def wsgi_application() -> Any:
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    configure()
    execute_from_command_line(sys.argv)
