from django.urls import path

from . import views

app_name = "shop"

urlpatterns = [
    path("", views.home, name="home"),
    path("product/<str:item_id>/", views.product, name="product"),
    path("cart/", views.add_to_cart, name="add-to-cart"),
    path("login/<str:user_id>/", views.login, name="login"),
    path("logout/", views.logout, name="logout"),
    path("metrics/", views.metrics, name="metrics"),
]
