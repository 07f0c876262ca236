from django.urls import include, path

urlpatterns = [
    path("api/", include("livedata_django.urls")),
]
