"""Thor's livedata_listen handlers, as docs/thor.md shows them."""

from livedata_django.listen import on

from .models import OrderEvent, Position

calls: list[tuple[str, str]] = []  # (kind, what) of every call, for the tests


@on("positions:*")
def keep_positions(message):
    position = message.data
    calls.append(("positions", position.symbol))
    if position.quantity == 0:
        Position.objects.filter(account_id=position.account_id, symbol=position.symbol).delete()
        return
    Position.objects.update_or_create(
        account_id=position.account_id,
        symbol=position.symbol,
        defaults={"quantity": position.quantity, "market_value": position.market_value},
    )


@on("orders:*")
def record_orders(message):
    order = message.data
    calls.append(("orders", order.order_id))
    OrderEvent.objects.get_or_create(account_id=order.account_id, order_id=order.order_id, status=order.status)
