"""The evaluator's walks over the ε grid and its resumable state, as small objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustft.attacks import APGD
from robustft.config import EVAL_MODES
from robustft.errors import ForeignFileError
from robustft.eval.state import EvalState
from robustft.eval.walks import DOWNWARD, WALKS, Downward, Incremental, Independent


def _state(rows: list[list[int]]) -> EvalState:
    state = EvalState.fresh(len(rows), len(rows[0]))
    state.correct[:] = np.array(rows, dtype=bool)
    state.breaker[:] = np.where(state.correct, -1, 1)
    return state


def test_every_evaluation_mode_has_a_walk():
    assert set(WALKS) == set(EVAL_MODES)


def test_the_walks_visit_the_grid_in_their_order():
    assert Incremental().order(4) == [0, 1, 2, 3]
    assert Independent().order(4) == [0, 1, 2, 3]
    assert Downward().order(4) == [0, 3, 2, 1]


def test_an_independent_walk_is_never_warm():
    assert not Independent(warm=True).warm and Incremental(warm=True).warm and Downward(warm=True).warm


def test_what_each_walk_attacks_and_settles():
    # clean row 0: examples 0-3 correct; row 1 (ε1): 0-2; row 2 (ε_g): 0-1
    rows = [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    row, settled = Incremental().attacked(_state(rows), 2, 1)
    assert row.tolist() == [True, True, True, False, False] and not settled.any()  # what survived ε1
    row, settled = Independent().attacked(_state(rows), 2, 1)
    assert row.tolist() == [True, True, True, True, False] and not settled.any()  # every clean-correct example
    # downward at ε1 after ε_g: what survived ε_g is settled, the rest of the clean-correct ones is attacked
    row, settled = Downward().attacked(_state(rows), 1, 2)
    assert row.tolist() == [True, True, True, True, False] and settled.tolist() == [True, True, False, False, False]
    row, settled = Downward().attacked(_state(rows), 2, 0)  # ε_g, right after the clean pass: nothing settled
    assert not settled.any()


def test_warm_starts_come_from_the_epsilon_walked_before():
    attack = APGD(num_steps=2)
    state = _state([[1, 1, 1], [1, 0, 1], [0, 0, 0]])
    state.breaker[2] = [0, 2, 1]
    points = torch.rand(3, 3, 4, 4)
    down = Downward(warm=True)
    down.remember(state, down.slot("apgd-ce"), np.arange(3), np.array([True, False, False]), points)
    state.starts_at = 2
    starts = down.starts(state, down.slot("apgd-ce"), attack, prev=2)
    assert starts is not None and down.slot("apgd-t") == DOWNWARD
    kept, has = starts
    assert torch.equal(kept[1:], points[1:]) and not kept[0].any()  # only the points that broke an example
    assert has.tolist() == [False, True, True]  # those broken at the ε above start from their point
    assert down.starts(state, DOWNWARD, attack, prev=1) is None  # points of another ε are not used
    assert Downward().starts(state, DOWNWARD, attack, prev=2) is None  # a cold walk never starts warm


def test_the_state_resumes_only_its_own_evaluation(tmp_path):
    state = _state([[1, 1, 0], [1, 0, 0]])
    state.done, state.radii, state.radius_by = 1, np.array([0.1, np.inf, np.inf]), np.array([1, -1, -1], np.int8)
    state.keep_start(DOWNWARD, np.array([1]), torch.ones(1, 3, 2, 2))
    state.cost("8/255", "apgd-ce", 2, 1.23456)
    path = tmp_path / "partial.npz"
    state.save(path, "key-a")
    again = EvalState.resume(path, "key-a", 2, 3)
    assert again.done == 1 and np.array_equal(again.correct, state.correct)
    assert np.array_equal(again.radii, state.radii) and torch.equal(again.starts[DOWNWARD], state.starts[DOWNWARD])
    assert again.costs == [{"eps": "8/255", "attack": "apgd-ce", "examples": 2, "seconds": 1.235}]
    assert EvalState.resume(path, "key-b", 2, 3).done == 0  # another protocol starts over
    path.write_bytes(b"not an npz")
    with pytest.raises(ForeignFileError, match="delete it"):
        EvalState.resume(path, "key-a", 2, 3)
