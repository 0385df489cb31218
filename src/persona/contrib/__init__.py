"""Integrations with web frameworks: import the one you use, explicitly.

* :mod:`persona.contrib.flask` -- a blueprint / extension with JSON endpoints and a ``flask persona
  train`` command;
* :mod:`persona.contrib.django` -- an installable Django app (settings, URLs, a view-tracking
  middleware, template tags, a ``persona_train`` management command);
* :mod:`persona.contrib.common` -- what both share and a shop with another framework can reuse:
  query parsing, JSON answers, event validation, and :func:`~persona.contrib.common.train_and_publish`.

``import persona`` never imports this package, and this package imports no framework: only
``persona.contrib.flask`` imports Flask and only ``persona.contrib.django`` imports Django.
See ``docs/integrations.md``.
"""

from __future__ import annotations

__all__: list[str] = []
