from django.conf import settings
from django.db import models


class SchwabToken(models.Model):
    """The seed design's model, unchanged."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    access_token = models.TextField()
    refresh_token = models.TextField()
    access_expires_at = models.DateTimeField()


class SchwabTokenWithIssueTime(models.Model):
    """The seed's model with the optional columns livedata uses when they exist."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    access_token = models.TextField()
    refresh_token = models.TextField()
    access_expires_at = models.BigIntegerField()  # milliseconds since the epoch work too
    refresh_issued_at = models.DateTimeField(null=True)
    token_type = models.CharField(max_length=20, default="Bearer")
    scope = models.CharField(max_length=50, null=True)


class Position(models.Model):
    """Thor's own table that a livedata_listen handler keeps up to date."""

    account_id = models.CharField(max_length=64)
    symbol = models.CharField(max_length=64)
    quantity = models.FloatField()
    market_value = models.FloatField(null=True)

    class Meta:
        unique_together = [("account_id", "symbol")]


class OrderEvent(models.Model):
    """Order states a livedata_listen handler records (once each, however often they arrive)."""

    account_id = models.CharField(max_length=64)
    order_id = models.CharField(max_length=64)
    status = models.CharField(max_length=32)

    class Meta:
        unique_together = [("account_id", "order_id", "status")]
