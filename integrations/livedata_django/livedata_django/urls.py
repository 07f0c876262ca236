app_name = "livedata"
urlpatterns: list = []
