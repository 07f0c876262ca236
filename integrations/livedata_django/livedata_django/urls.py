"""The seed design's endpoints; include them under any prefix: ``path("api/", include("livedata_django.urls"))``.

====================================================  ======  =================================================
path (after the prefix)                               method  does
====================================================  ======  =================================================
``schwab/oauth/start/``                               POST    start the Schwab login (redirect or its URL)
``schwab/oauth/callback/``                            GET     Schwab's redirect: tokens into the user's row
``schwab/accounts/``                                  GET     the user's Schwab accounts
``schwab/accounts/<account_id>/positions/``           GET     fetch, publish to Redis, return positions
``schwab/accounts/<account_id>/balances/``            GET     fetch, publish to Redis, return balances
``feed/<broker>/status/``                             GET     the running runner's status of the feed
``feed/<broker>/subscribe/``                          POST    stream more symbols
``feed/<broker>/unsubscribe/``                        POST    stop streaming symbols
====================================================  ======  =================================================

``<broker>`` is one of ``LIVEDATA["FEED_BROKERS"]`` (default ``tos``). URL names are in the ``livedata``
namespace (``reverse("livedata:feed-status", args=["tos"])``).
"""

from django.urls import path

from . import views

app_name = "livedata"

urlpatterns = [
    path("schwab/oauth/start/", views.oauth_start, name="schwab-oauth-start"),
    path("schwab/oauth/callback/", views.oauth_callback, name="schwab-oauth-callback"),
    path("schwab/accounts/", views.accounts, name="schwab-accounts"),
    path("schwab/accounts/<str:account_id>/positions/", views.positions, name="schwab-positions"),
    path("schwab/accounts/<str:account_id>/balances/", views.balances, name="schwab-balances"),
    path("feed/<str:broker>/status/", views.feed_status, name="feed-status"),
    path("feed/<str:broker>/subscribe/", views.feed_subscribe, name="feed-subscribe"),
    path("feed/<str:broker>/unsubscribe/", views.feed_unsubscribe, name="feed-unsubscribe"),
]
