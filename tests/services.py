"""The one rule for tests that need a system service (a PostgreSQL server, Chromium, Java).

On a fresh machine (Python and a compiler, nothing else) such a test *skips* with a loud reason that
names the package to install; with ``PERSONA_REQUIRE_SERVICES=1`` (``.ci/run`` sets it after installing
every service) a missing service *fails* the test instead, so CI never goes green by skipping.
"""

from __future__ import annotations

import os

import pytest

#: what to install for each service the full suite uses (Debian package names)
INSTALL = {
    "postgresql": "apt-get update && apt-get install -y postgresql",
    "chromium": "apt-get update && apt-get install -y chromium chromium-driver",
    "java": "apt-get update && apt-get install -y openjdk-17-jre-headless",
}


def services_required() -> bool:
    """True when ``PERSONA_REQUIRE_SERVICES`` asks that a missing service fail the test."""
    return os.environ.get("PERSONA_REQUIRE_SERVICES", "").strip().lower() in {"1", "true", "yes", "on"}


def missing_service(service: str, detail: str) -> None:
    """Skip (or, when services are required, fail) the calling test: ``service`` is not available.

    ``service`` is a key of :data:`INSTALL`; ``detail`` says what exactly was not found.
    """
    how = INSTALL.get(service, f"install {service}")
    message = (f"needs {service}, which is not available here ({detail}); install it with: {how} "
               f"(.ci/run does, and sets PERSONA_REQUIRE_SERVICES=1 so that a missing service fails)")
    if services_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
