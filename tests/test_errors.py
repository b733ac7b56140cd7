"""fw.errors.check_choice words its message as the hand-written checks it replaced."""

from __future__ import annotations

import pytest

from fw.errors import check_choice


def test_check_choice_accepts_a_member() -> None:
    check_choice("sum", ("sum", "uniform"), "mode")


@pytest.mark.parametrize(
    ("choices", "expected"),
    [
        (("sum", "uniform"), "knn_walks: mode must be 'sum' or 'uniform', got 'max'"),
        (("a", "b", "c"), "knn_walks: mode must be 'a', 'b' or 'c', got 'max'"),
    ],
)
def test_check_choice_names_every_choice(choices, expected) -> None:
    with pytest.raises(ValueError) as err:
        check_choice("max", choices, "knn_walks: mode")
    assert str(err.value) == expected
