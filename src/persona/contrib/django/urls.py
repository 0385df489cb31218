"""``path("persona/", include("persona.contrib.django.urls"))`` -- URL names in the ``persona`` namespace."""

from __future__ import annotations

from django.urls import path, re_path

from . import views

app_name = "persona"

urlpatterns = [
    path("recommendations/", views.my_recommendations, name="my-recommendations"),
    path("recommendations/<str:user>/", views.recommendations, name="recommendations"),
    path("similar/<str:item>/", views.similar, name="similar"),
    path("events/", views.events, name="events"),
    path("stats/", views.stats, name="stats"),
    re_path(r"^(?P<rest>[\s\S]*)\Z", views.not_found, name="not-found"),  # the rest under the mount point: JSON 404
]
