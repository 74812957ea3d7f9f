"""Reordering a list of items: pure logic, no database.

Positions are rewritten densely (0..n-1) in the new order, so ties and gaps left by
older writes disappear the first time someone moves an item.
"""
from __future__ import annotations


def reorder(ids: list[int], item_id: int, *, direction: str | None = None, index: int | None = None) -> list[int]:
    """The order `ids` takes after moving `item_id` one step (direction) or to `index`."""
    if item_id not in ids:
        raise ValueError(f"item {item_id} is not in the list")
    order = [i for i in ids if i != item_id]
    current = ids.index(item_id)
    if direction == "up":
        target = current - 1
    elif direction == "down":
        target = current + 1
    elif index is not None:
        target = index
    else:
        raise ValueError("give a direction or an index")
    target = max(0, min(target, len(order)))
    order.insert(target, item_id)
    return order


def position_changes(current: dict[int, int], order: list[int]) -> dict[int, int]:
    """Items whose position must change so that `order` reads 0..n-1; others are left alone."""
    return {item_id: pos for pos, item_id in enumerate(order) if current.get(item_id) != pos}
