"""Reordering logic of the web UI (pure, no database)."""
import pytest

from portal.checklists.ordering import position_changes, reorder


def test_move_up_and_down_one_step():
    assert reorder([1, 2, 3], 2, direction="up") == [2, 1, 3]
    assert reorder([1, 2, 3], 2, direction="down") == [1, 3, 2]


def test_moving_past_either_end_is_a_no_op():
    assert reorder([1, 2, 3], 1, direction="up") == [1, 2, 3]
    assert reorder([1, 2, 3], 3, direction="down") == [1, 2, 3]


def test_move_to_index_counts_in_the_list_without_the_item():
    assert reorder([1, 2, 3, 4], 1, index=2) == [2, 3, 1, 4]
    assert reorder([1, 2, 3, 4], 4, index=0) == [4, 1, 2, 3]
    assert reorder([1, 2, 3, 4], 2, index=99) == [1, 3, 4, 2]


def test_unknown_item_or_no_target_is_an_error():
    with pytest.raises(ValueError):
        reorder([1, 2], 9, direction="up")
    with pytest.raises(ValueError):
        reorder([1, 2], 1)


def test_position_changes_rewrites_densely_and_only_what_differs():
    # Ties (two items at 0) are resolved by the dense rewrite.
    assert position_changes({1: 0, 2: 0, 3: 2}, [1, 2, 3]) == {2: 1}
    assert position_changes({1: 0, 2: 1}, [2, 1]) == {2: 0, 1: 1}
    assert position_changes({1: 0, 2: 1}, [1, 2]) == {}
