"""Plain-text tables for the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COLUMNS: dict[str, tuple[str, ...]] = {
    "accounts": ("account_id", "account_type", "name"),
    "positions": ("account_id", "symbol", "quantity", "average_price", "market_value", "unrealized_pnl", "asset_type"),
    "balances": ("account_id", "currency", "cash", "buying_power", "account_value", "equity"),
    "orders": ("account_id", "order_id", "symbol", "side", "order_type", "quantity", "filled_quantity", "price", "status", "broker_status"),
    "transactions": ("account_id", "transaction_id", "type", "symbol", "quantity", "price", "amount", "description"),
}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1000 or value != int(value) else f"{value:g}"
    return str(value)


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as an aligned text table with a header; numbers right-aligned."""
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line([c.upper() for c in columns]), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)
