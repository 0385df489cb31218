"""The Django app config: ``INSTALLED_APPS += ["persona.contrib.django"]`` (label ``persona``)."""

from __future__ import annotations

from django.apps import AppConfig


class PersonaConfig(AppConfig):
    name = "persona.contrib.django"
    label = "persona"
    verbose_name = "persona recommendations"
    default = True

    def ready(self) -> None:
        from . import runtime  # noqa: F401 -- connects the setting_changed handler

        runtime.settings_dict()  # refuse unknown PERSONA keys at start-up, not at the first request
