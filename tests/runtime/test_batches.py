"""forward_batches: outputs land at their rows, unseen rows stay NaN, empty batches are skipped."""

from __future__ import annotations

import numpy as np
import torch

from fashionlens.runtime import SINGLE_OUTPUT, forward_batches


def test_outputs_land_at_their_rows_and_unseen_rows_stay_nan() -> None:
    batches = [(torch.tensor([[1.0], [2.0]]), torch.tensor([4, 0])), (torch.empty(0, 1), torch.empty(0)),
               (torch.tensor([[3.0]]), [2])]
    seen_batches: list[list[int]] = []
    outputs, seen = forward_batches(lambda x: {"double": 2 * x, "sum": x.sum(1, keepdim=True)}, batches, 5,
                                    on_batch=lambda rows, out: seen_batches.append(rows.tolist()))
    assert seen == [4, 0, 2] and seen_batches == [[4, 0], [2]]
    np.testing.assert_array_equal(outputs["double"][:, 0], [4.0, np.nan, 6.0, np.nan, 2.0])


def test_a_single_output_and_numpy_forwards_work() -> None:
    outputs, _ = forward_batches(lambda x: np.asarray(x) + 1, [(torch.zeros(2, 3), np.array([1, 0]))], 2)
    assert outputs[SINGLE_OUTPUT].shape == (2, 3) and outputs[SINGLE_OUTPUT].dtype == np.float32
    np.testing.assert_array_equal(outputs[SINGLE_OUTPUT], np.ones((2, 3)))
