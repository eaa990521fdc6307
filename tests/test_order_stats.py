import itertools

import pytest
import torch

from robustbench_dice.order_stats import NETWORK_MAX, batcher_pairs, sort_along


@pytest.mark.parametrize("m", range(1, 13))
def test_batcher_pairs_sort_every_zero_one_sequence(m):
    # the 0-1 principle: a comparator network that sorts every 0/1 input sorts every input
    for bits in itertools.product((0, 1), repeat=m):
        items = list(bits)
        for i, j in batcher_pairs(m):
            assert i < j < m
            items[i], items[j] = min(items[i], items[j]), max(items[i], items[j])
        assert items == sorted(bits)


@pytest.mark.parametrize("m", [1, 2, 3, 5, 7, 11, 16, 17, 33])
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_sort_along_equals_torch_sort(m, dim):
    generator = torch.Generator().manual_seed(m)
    shape = [4, 6, 5]
    shape[dim] = m
    values = torch.randint(-3, 4, shape, generator=generator).to(torch.float64)  # many ties
    values[values == 3] = float("inf")
    values[values == -3] = -float("inf")
    assert torch.equal(sort_along(values, dim), values.sort(dim=dim).values)
    noise = torch.randn(shape, generator=generator)
    assert torch.equal(sort_along(noise, dim), noise.sort(dim=dim).values)


def test_nan_and_long_dimensions_fall_back_to_torch_sort():
    values = torch.randn(3, 9, 4)
    values[1, 4, 2] = float("nan")
    expected = values.sort(dim=1).values
    got = sort_along(values, 1)
    assert torch.equal(got.isnan(), expected.isnan()) and torch.equal(got.nan_to_num(), expected.nan_to_num())
    long = torch.randn(2, NETWORK_MAX + 1, 3)
    assert torch.equal(sort_along(long, 1), long.sort(dim=1).values)


@pytest.mark.parametrize("m", range(1, 12))
def test_coordinate_median_fast_path_equals_sorting_and_the_masked_path(m):
    from robustbench_dice.order_stats import coordinate_median

    candidates = torch.randn(5, m, 30, generator=torch.Generator().manual_seed(m), dtype=torch.float64)
    ordered = candidates.sort(dim=1).values
    expected = (ordered[:, (m - 1) // 2] + ordered[:, m // 2]) / 2
    assert torch.equal(coordinate_median(candidates, torch.ones(5, m, dtype=torch.bool)), expected)
    # the masked path on the same candidates plus one padded slot per node gives the same numbers
    padded = torch.cat([candidates, torch.full((5, 1, 30), 123.0, dtype=torch.float64)], dim=1)
    mask = torch.cat([torch.ones(5, m, dtype=torch.bool), torch.zeros(5, 1, dtype=torch.bool)], dim=1)
    assert torch.equal(coordinate_median(padded, mask), expected)


@pytest.mark.parametrize("m", range(1, 12))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coordinate_trimmed_mean_fast_path_equals_the_general_formula_bit_for_bit(m, dtype):
    from robustbench_dice.order_stats import coordinate_trimmed_mean

    candidates = torch.randn(5, m, 30, generator=torch.Generator().manual_seed(m), dtype=dtype) * 7
    candidates[0, :, :3] = -0.0
    full = torch.ones(5, m, dtype=torch.bool)
    padded = torch.cat([candidates, torch.full((5, 1, 30), 123.0, dtype=dtype)], dim=1)
    mask = torch.cat([full, torch.zeros(5, 1, dtype=torch.bool)], dim=1)
    ordered = candidates.sort(dim=1).values
    for trim in range((m + 1) // 2):
        position = torch.arange(m).view(1, m, 1)
        kept = torch.where((position >= trim) & (position < m - trim), ordered, torch.zeros_like(ordered))
        expected = kept.sum(1) / torch.full((5, 1), m - 2 * trim, dtype=dtype)
        got = coordinate_trimmed_mean(candidates, full, trim)
        assert torch.equal(got, expected) and torch.equal(got.signbit(), expected.signbit())
        torch.testing.assert_close(coordinate_trimmed_mean(padded, mask, trim), expected)  # the general path


def test_order_statistics_of_irregular_neighbourhoods_match_numpy():
    import numpy as np

    from robustbench_dice.order_stats import coordinate_median, coordinate_trimmed_mean

    generator = torch.Generator().manual_seed(0)
    candidates = torch.randn(6, 7, 20, generator=generator, dtype=torch.float64)
    counts = [7, 6, 5, 4, 3, 7]
    mask = torch.arange(7).unsqueeze(0) < torch.tensor(counts).unsqueeze(1)
    median = coordinate_median(candidates, mask)
    trimmed = coordinate_trimmed_mean(candidates, mask, 1)
    for node, count in enumerate(counts):
        valid = np.sort(candidates[node, :count].numpy(), axis=0)
        np.testing.assert_allclose(median[node].numpy(), np.median(valid, axis=0), rtol=0, atol=1e-15)
        np.testing.assert_allclose(trimmed[node].numpy(), valid[1 : count - 1].mean(0), rtol=1e-13)
