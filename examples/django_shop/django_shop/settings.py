"""Settings of the example shop: no database (the catalogue is synthetic, sessions live in signed
cookies); persona's event store and model live in ``DJANGO_SHOP_DATA`` (default ``./data``)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("DJANGO_SHOP_DATA") or BASE_DIR / "data")
DATA_DIR.mkdir(parents=True, exist_ok=True)  # the event store's and the model's folder

SECRET_KEY = os.environ.get("DJANGO_SHOP_SECRET", "dev-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_SHOP_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "persona.contrib.django",
    "shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # records a "view" for every product page shown (PERSONA["TRACK_VIEWS"] below)
    "persona.contrib.django.middleware.TrackViewsMiddleware",
]
ROOT_URLCONF = "django_shop.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
}]
DATABASES = {}
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
USE_TZ = True
WSGI_APPLICATION = "django_shop.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# the synthetic shop behind the catalogue (shop/catalog.py)
SHOP = {
    "USERS": int(os.environ.get("DJANGO_SHOP_USERS", 400)),
    "ITEMS": int(os.environ.get("DJANGO_SHOP_ITEMS", 300)),
    "SEED": 7,
}

PERSONA = {
    "MODEL_PATH": DATA_DIR / "model.persona",
    "STORE": str(DATA_DIR / "events.db"),
    "WATCH": True,  # `manage.py persona_train` publishes; the running server reloads within WATCH_INTERVAL
    "WATCH_INTERVAL": 2.0,
    "CATALOG": "shop.catalog.catalog_frame",  # category / brand / price filters
    "ITEMS": "shop.catalog.lookup",  # what the template tags render for an item id
    "TRACK_VIEWS": {"shop:product": "item_id"},
    "TRAIN": {"MODEL": "itemknn", "PARAMS": {"k": 50}},
}
