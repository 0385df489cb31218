"""``python manage.py seed_shop``: put the synthetic shop's past events into persona's store, then
train and publish the first model (``persona_train``)."""

from django.core.management import call_command
from django.core.management.base import BaseCommand

from persona.contrib.django import get_store

from ...catalog import synthetic


class Command(BaseCommand):
    help = "Load the synthetic shop's event history into the persona event store and train a first model."

    def add_arguments(self, parser):
        parser.add_argument("--no-train", action="store_true", help="only load the events")

    def handle(self, *args, no_train=False, **options):
        store = get_store()
        ev = synthetic().events
        for i, (user, item, ts, event, value) in enumerate(zip(ev["user_id"], ev["item_id"], ev["timestamp"],
                                                               ev["event"].astype(str), ev["value"])):
            # fixed event ids: seeding twice stores every event once
            store.track(user, item, event, timestamp=ts.timestamp(),
                        value=None if value != value else float(value), event_id=f"seed-{i}")
        store.flush()
        self.stdout.write(f"{len(ev)} events in the store ({store.count()} in all)")
        if not no_train:
            call_command("persona_train", stdout=self.stdout)
