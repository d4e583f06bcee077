"""ROI -> visual-token geometry (Qwen2.5-VL: 14-px patches, 2x2 merge, 28-px cells)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spotvlm_ros.core.focus import (
    TokenGrid,
    focus_token_indices,
    largest_per_label,
    roi_token_groups,
    smart_resize,
)
from spotvlm_ros.core.types import Box, Roi


def test_smart_resize_matches_qwen_rules() -> None:
    assert smart_resize(720, 1280) == (728, 1288)  # rounded to multiples of 28
    h, w = smart_resize(720, 1280, max_pixels=448 * 448)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 448 * 448
    assert (h, w) == (336, 588)  # 12 x 21 = 252 tokens, as design.md measured
    h, w = smart_resize(10, 20, min_pixels=56 * 56)
    assert h * w >= 56 * 56 and h % 28 == 0 and w % 28 == 0


@pytest.mark.parametrize(("h", "w"), [(0, 10), (10, -1), (1, 500)])
def test_smart_resize_refuses_bad_sizes(h: int, w: int) -> None:
    with pytest.raises(ValueError, match=r"size|ratio"):
        smart_resize(h, w)


def test_grid_dimensions() -> None:
    grid = TokenGrid(1280, 720, 588, 336)
    assert (grid.rows, grid.cols, grid.size) == (12, 21, 252)


def test_a_7x7_token_roi_keeps_exactly_49_tokens() -> None:
    grid = TokenGrid(588, 336, 588, 336)  # original == resized: 1 px == 1 px
    box = Box(2 * 28, 3 * 28, 9 * 28, 10 * 28)
    idx = grid.token_indices(box)
    assert len(idx) == 49
    assert idx[0] == 3 * 21 + 2
    assert idx[-1] == 9 * 21 + 8


def test_box_edges_inside_a_cell_take_the_whole_cell() -> None:
    grid = TokenGrid(588, 336, 588, 336)
    assert grid.token_indices(Box(27, 27, 29, 29)) == (0, 1, 21, 22)
    assert grid.token_indices(Box(28, 28, 29, 29)) == (22,)


def test_box_in_original_pixels_is_scaled_to_the_resized_grid() -> None:
    grid = TokenGrid(1280, 720, 588, 336)
    whole = grid.token_indices(Box(0, 0, 1280, 720))
    assert whole == tuple(range(252))


def test_roi_outside_the_image_gives_no_tokens() -> None:
    grid = TokenGrid(1280, 720, 588, 336)
    assert grid.token_indices(Box(1300, 0, 1400, 100)) == ()
    assert grid.token_indices(Box(-100, -100, -1, -1)) == ()


def test_bad_grid_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple"):
        TokenGrid(100, 100, 100, 100)
    with pytest.raises(ValueError, match="positive"):
        TokenGrid(0, 100, 56, 56)


def test_largest_roi_per_label() -> None:
    small_car = Roi("car", Box(0, 0, 10, 10))
    big_car = Roi("car", Box(0, 0, 100, 100))
    person = Roi("pedestrian", Box(0, 0, 5, 20))
    assert largest_per_label([small_car, person, big_car]) == (big_car, person)


def test_focus_tokens_are_the_union_of_the_largest_rois() -> None:
    grid = TokenGrid(588, 336, 588, 336)
    rois = [
        Roi("car", Box(0, 0, 56, 28)),  # tokens 0, 1
        Roi("car", Box(0, 0, 28, 28)),  # smaller car: ignored
        Roi("bus", Box(28, 0, 84, 28)),  # tokens 1, 2
    ]
    assert focus_token_indices(rois, grid) == (0, 1, 2)
    assert roi_token_groups(rois, grid) == {"bus": (1, 2), "car": (0, 1)}


finite = st.floats(-5000, 5000, allow_nan=False)


@settings(max_examples=500, deadline=None)
@given(
    image=st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
    cells=st.tuples(st.integers(1, 60), st.integers(1, 60)),
    box=st.tuples(finite, finite, finite, finite),
)
def test_roi_mapping_never_leaves_the_grid(
    image: tuple[int, int], cells: tuple[int, int], box: tuple[float, float, float, float]
) -> None:
    grid = TokenGrid(image[0], image[1], cells[0] * 28, cells[1] * 28)
    idx = grid.token_indices(Box.from_corners(*box))
    assert all(0 <= i < grid.size for i in idx)
    assert len(set(idx)) == len(idx)
    assert list(idx) == sorted(idx)
