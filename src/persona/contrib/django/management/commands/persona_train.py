"""``python manage.py persona_train``: train on the event store and publish the model atomically.

The artifact is written to a temporary sibling of ``PERSONA["MODEL_PATH"]`` and renamed into
place, so web workers watching it (``PERSONA["WATCH"]``) load the new model on their next check
and never see a half-written one. Run it from cron / a scheduler, e.g. nightly or hourly.

It prints what it kept and what it dropped, per event name with counts: an event name with no
weight (a shop's own ``add_to_cart``) is left out of training until ``PERSONA["EVENT_WEIGHTS"]``
or ``--weights add_to_cart=4`` gives it one.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from persona.contrib import common
from persona.contrib.common import RequestError
from persona.contrib.django import runtime
from persona.errors import PersonaError


def _param(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CommandError(f"--param expects name=value (e.g. k=50), got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


class Command(BaseCommand):
    help = "Train a recommender on the persona event store and publish it atomically at PERSONA['MODEL_PATH']."

    def add_arguments(self, parser):
        parser.add_argument("--model", help="model name: itemknn, als, ease, popular, ... "
                                            "(default PERSONA['TRAIN']['MODEL'], else itemknn)")
        parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                            help="a hyperparameter, repeatable (values are JSON: k=50, factors=32)")
        parser.add_argument("--since", help="train on events at or after this time (ISO-8601)")
        parser.add_argument("--event-types", help="comma-separated event types to train on (default: those "
                                                  "with a weight: view, click, cart, purchase, search and "
                                                  "PERSONA['EVENT_WEIGHTS'])")
        parser.add_argument("--weights", action="append", default=[], metavar="NAME=W,...",
                            help="event weights for this run, over PERSONA['EVENT_WEIGHTS'] "
                                 "(e.g. add_to_cart=4,view=0.5)")
        parser.add_argument("--out", help="where to publish (default PERSONA['MODEL_PATH'])")

    def handle(self, *args, **opts):
        conf = runtime.settings_dict()
        train = conf["TRAIN"] or {}
        out = opts["out"] or conf["MODEL_PATH"]
        if out is None:
            raise CommandError("nowhere to publish: set PERSONA['MODEL_PATH'] or pass --out")
        store = runtime.get_store()
        if store is None:
            raise CommandError("no event store to train on: set PERSONA['STORE']")
        name = opts["model"] or train.get("MODEL") or "itemknn"
        # the settings' PARAMS belong to the settings' MODEL, not to another one asked for on the command line
        params = dict(train.get("PARAMS") or {}) if name == (train.get("MODEL") or "itemknn") else {}
        params.update(_param(p) for p in opts["param"])
        event_types = opts["event_types"].split(",") if opts["event_types"] else train.get("EVENT_TYPES")
        try:
            weights = {**(common.event_weights(conf["EVENT_WEIGHTS"], "PERSONA['EVENT_WEIGHTS']") or {}),
                       **(common.event_weights(train.get("WEIGHTS"), "PERSONA['TRAIN']['WEIGHTS']") or {}),
                       **common.parse_weights(opts["weights"])}
            published = common.train_and_publish(
                store, out, model=name, params=params, since=opts["since"] or train.get("SINCE"),
                event_types=event_types, weights=weights or None, words=common.DJANGO_WORDS)
        except RequestError as e:
            raise CommandError(e.message) from None
        except PersonaError as e:
            raise CommandError(str(e)) from None
        self.stdout.write(str(published))
