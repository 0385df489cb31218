from django.urls import include, path

urlpatterns = [
    path("persona/", include("persona.contrib.django.urls")),  # the JSON endpoints
    path("", include("shop.urls")),
]
