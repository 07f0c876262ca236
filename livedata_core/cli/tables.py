"""Plain-text tables for the CLI."""

from __future__ import annotations

import textwrap
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


def _column_widths(natural: list[int], least: list[int], wrap: list[bool], width: int) -> list[int]:
    """Narrow the wrappable columns so that the row fits ``width`` (2 spaces between columns): each gets an equal
    share of the room the others leave, or less if it needs less, and never less than its longest word."""
    widths = list(natural)
    room = width - 2 * (len(widths) - 1) - sum(w for w, can in zip(widths, wrap) if not can)
    narrowable = sorted((i for i, can in enumerate(wrap) if can), key=lambda i: natural[i])
    for n, i in enumerate(narrowable):
        share = room // (len(narrowable) - n)
        widths[i] = max(least[i], min(natural[i], share))
        room -= widths[i]
    return widths


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, width: int | None = None,
                 wrap: Sequence[str] = ()) -> str:
    """Rows as an aligned text table with a header; numbers right-aligned.

    With ``width``, the text of the ``wrap`` columns is wrapped at spaces onto more lines so that every line fits in
    ``width`` characters (where their longest words allow); nothing is cut off.
    """
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows) for c in columns]
    wrapped = [c in wrap for c in columns]
    if width is not None and sum(widths) + 2 * (len(widths) - 1) > width and any(wrapped):
        least = [max(len(c), *(len(word) for r in cells for word in r[i].split())) for i, c in enumerate(columns)]
        widths = _column_widths(widths, least, wrapped, width)

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    def row_lines(values: Sequence[str]) -> list[str]:
        parts = [textwrap.wrap(v, w, break_long_words=False, break_on_hyphens=False) or [""] if can else [v]
                 for v, w, can in zip(values, widths, wrapped)]
        height = max(len(p) for p in parts)
        return [line([p[k] if k < len(p) else "" for p in parts]) for k in range(height)]

    out = [line([c.upper() for c in columns]), line(["-" * w for w in widths])]
    for r in cells:
        out.extend(row_lines(r))
    return "\n".join(out)
