"""ChunkExecutor: exact action sequences for receding horizon and ACT temporal ensembling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlaforge.runtime import ChunkExecutor, ExecutorConfig, ensemble_action, ensemble_weights
from vlaforge.types import ActionChunk


def chunk(n: int, horizon: int) -> np.ndarray:
    """The n-th predicted chunk: action h has value 10 * n + h (A = 1), so every action is traceable."""
    return (10.0 * n + np.arange(horizon, dtype=np.float32))[:, None]  # (H, 1)


def run(executor: ChunkExecutor, horizon: int, ticks: int) -> tuple[list[float], list[int]]:
    """Drive the executor like a control loop; returns the actions and the ticks at which it re-planned."""
    actions, calls = [], []
    for t in range(ticks):
        if executor.needs_new_chunk():
            executor.push(chunk(len(calls), horizon))
            calls.append(t)
        a = executor.next_action()
        assert a.shape == (1,) and a.dtype == np.float32
        actions.append(float(a[0]))
    return actions, calls


def test_receding_executes_first_k_then_replans():
    actions, calls = run(ChunkExecutor(ExecutorConfig(mode="receding", execute=2)), horizon=4, ticks=6)
    assert actions == [0, 1, 10, 11, 20, 21]
    assert calls == [0, 2, 4]


def test_receding_default_executes_whole_chunk():
    ex = ChunkExecutor()
    actions, calls = run(ex, horizon=3, ticks=7)
    assert actions == [0, 1, 2, 10, 11, 12, 20]
    assert calls == [0, 3, 6]
    assert ex.execute == 3


def test_ensemble_uniform_weights_average_all_overlapping_predictions():
    actions, calls = run(
        ChunkExecutor(ExecutorConfig(mode="ensemble", ensemble_decay=0.0)), horizon=3, ticks=5
    )
    # t=0: c0[0]=0 | t=1: (1 + 10)/2 | t=2: (2 + 11 + 20)/3 | t=3: (12 + 21 + 30)/3 | t=4: (22 + 31 + 40)/3
    np.testing.assert_allclose(actions, [0.0, 5.5, 11.0, 21.0, 31.0], rtol=1e-6)
    assert calls == [0, 1, 2, 3, 4]


def test_ensemble_exponential_weights_favour_the_oldest_prediction_like_act():
    m = math.log(2.0)  # w = 1, 1/2, 1/4 for the oldest, middle, newest prediction
    actions, _ = run(ChunkExecutor(ExecutorConfig(mode="ensemble", ensemble_decay=m)), horizon=3, ticks=3)
    np.testing.assert_allclose(actions, [0.0, (1 + 10 / 2) / 1.5, (2 + 11 / 2 + 20 / 4) / 1.75], rtol=1e-6)
    np.testing.assert_allclose(ensemble_weights(3, m), [4 / 7, 2 / 7, 1 / 7])
    # a negative decay favours the newest prediction instead
    assert ensemble_weights(2, -1.0)[1] > ensemble_weights(2, -1.0)[0]


def test_ensemble_with_replanning_every_k_steps():
    ex = ChunkExecutor(ExecutorConfig(mode="ensemble", execute=2, ensemble_decay=0.0))
    actions, calls = run(ex, horizon=4, ticks=6)
    # pushes at 0, 2, 4; t=2: (2 + 10)/2, t=3: (3 + 11)/2, t=4: (12 + 20)/2, t=5: (13 + 21)/2
    np.testing.assert_allclose(actions, [0, 1, 6, 7, 16, 17])
    assert calls == [0, 2, 4]


def test_ensemble_action_is_a_weighted_mean_per_dimension():
    preds = np.array([[0.0, 4.0], [3.0, 1.0]], dtype=np.float32)  # (n=2, A=2), oldest first
    np.testing.assert_allclose(ensemble_action(preds, 0.0), [1.5, 2.5])
    w0 = 1 / (1 + math.exp(-1.0))
    np.testing.assert_allclose(ensemble_action(preds, 1.0), [3 * (1 - w0), 4 * w0 + (1 - w0)], rtol=1e-6)


def test_delayed_chunk_skips_actions_already_in_the_past():
    """The asynchronous seam: a chunk requested at tick 0 but delivered at tick 2 starts at its 3rd action."""
    ex = ChunkExecutor(ExecutorConfig(mode="receding"))
    ex.push(chunk(0, 4))
    ex.next_action(), ex.next_action()
    ex.push(chunk(1, 4), start_step=0)
    assert ex.executed_since(0) == 2
    np.testing.assert_array_equal(ex.pending_actions()[:, 0], [12, 13])
    assert float(ex.next_action()[0]) == 12.0


def test_reset_forgets_chunks_and_accepts_action_chunk_objects():
    ex = ChunkExecutor(ExecutorConfig(mode="ensemble", ensemble_decay=0.0))
    ex.push(ActionChunk(actions=chunk(5, 3), control_hz=10.0))
    ex.next_action()
    ex.reset()
    assert ex.step == 0 and ex.needs_new_chunk()
    ex.push(chunk(0, 3))
    assert float(ex.next_action()[0]) == 0.0


def test_misuse_fails_loudly():
    ex = ChunkExecutor()
    with pytest.raises(RuntimeError, match="push a chunk first"):
        ex.next_action()
    with pytest.raises(ValueError, match=r"\(H, A\)"):
        ex.push(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        ex.push(np.full((2, 1), np.nan))
    ex.push(chunk(0, 2))
    with pytest.raises(ValueError, match="action dimension changed"):
        ex.push(np.zeros((2, 3)))
    ex.next_action(), ex.next_action()
    with pytest.raises(RuntimeError, match="used up"):
        ex.next_action()
    with pytest.raises(ValueError, match="larger than the chunk length"):
        ChunkExecutor(ExecutorConfig(execute=5)).push(chunk(0, 4))
    with pytest.raises(ValueError, match="in the future"):
        ChunkExecutor().push(chunk(0, 4), start_step=3)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"mode": "bogus"}, "mode"),
        ({"mode": "rtc", "execute": 1, "rtc_delay": 2}, "execute"),
        ({"rtc_delay": -1}, "rtc_delay"),
        ({"execute": 0}, "execute"),
        ({"ensemble_decay": math.inf}, "ensemble_decay"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"ExecutorConfig.{field}"):
        ExecutorConfig(**kwargs)


def test_config_label():
    assert ExecutorConfig().describe() == "receding k=H"
    assert ExecutorConfig(mode="receding", execute=8).describe() == "receding k=8"
    assert ExecutorConfig(mode="ensemble").describe() == "ensemble k=1 m=0.01"


def test_ensemble_orders_predictions_by_their_start_tick_not_arrival():
    """A late chunk (start_step in the past) still counts as older than chunks that start after it."""
    ex = ChunkExecutor(ExecutorConfig(mode="ensemble", ensemble_decay=math.log(2.0)))
    ex.push(chunk(0, 3))
    ex.next_action()
    ex.push(chunk(1, 3))  # starts at tick 1
    ex.push(chunk(2, 3), start_step=0)  # requested at tick 0, arrived late
    # tick 1, oldest first: c0[1] = 1, c2[1] = 21, c1[0] = 10 with weights 4/7, 2/7, 1/7
    assert float(ex.next_action()[0]) == pytest.approx((4 * 1 + 2 * 21 + 10) / 7)
