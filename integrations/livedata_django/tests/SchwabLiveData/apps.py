from django.apps import AppConfig


class SchwabLiveDataConfig(AppConfig):
    name = "SchwabLiveData"
    label = "SchwabLiveData"
