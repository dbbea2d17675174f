"""Real-time chunking: the weight schedule, the executor's rtc mode, rtc_predict on a real tiny policy."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.policies.policy_fakes import TINY, TinyDataset
from vlaforge.eval.rollout import rollout
from vlaforge.runtime import ChunkExecutor, ExecutorConfig, aligned_prefix, rtc_predict, rtc_weights
from vlaforge.types import ActionChunk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from eval_fakes import IMAGE, ConstantPolicy, ReachEnv  # noqa: E402


def test_rtc_weights_follow_the_paper_schedule():
    H, d, s = 10, 2, 4
    w = rtc_weights(H, d, s)
    assert w.shape == (H,) and w.dtype == np.float32
    np.testing.assert_array_equal(w[:d], 1.0)  # frozen: due during the inference delay
    np.testing.assert_array_equal(w[H - s :], 0.0)  # past the previous chunk's end: free
    overlap = w[d : H - s]
    assert np.all(np.diff(overlap) < 0) and np.all((overlap > 0) & (overlap < 1))
    c = (H - s - d) / (H - s - d + 1)  # c_i at i = d
    assert w[d] == pytest.approx(c * (math.exp(c) - 1) / (math.e - 1), rel=1e-6)
    np.testing.assert_array_equal(rtc_weights(4, 0, 4), np.zeros(4))
    with pytest.raises(ValueError, match="d <= H - s"):
        rtc_weights(8, 5, 4)
    with pytest.raises(ValueError, match="delay must be an int"):
        rtc_weights(8, -1, 4)


def test_aligned_prefix_shifts_and_pads_with_the_last_action():
    prev = np.arange(5, dtype=np.float32)[:, None]  # (H=5, A=1)
    np.testing.assert_array_equal(aligned_prefix(prev, 3)[:, 0], [3, 4, 4, 4, 4])
    with pytest.raises(ValueError, match="used up"):
        aligned_prefix(prev, 5)


def test_executor_rtc_mode_replans_every_half_chunk_and_hands_out_the_aligned_previous_chunk():
    ex = ChunkExecutor(ExecutorConfig(mode="rtc", rtc_delay=1))
    assert ex.rtc_guidance() is None  # nothing to continue yet
    first = np.arange(8, dtype=np.float32)[:, None]  # (8, 1)
    ex.push(first)
    assert ex.execute == 4
    actions = [float(ex.next_action()[0]) for _ in range(4)]
    assert actions == [0, 1, 2, 3] and ex.needs_new_chunk()
    prefix, w = ex.rtc_guidance()
    np.testing.assert_array_equal(prefix[:, 0], [4, 5, 6, 7, 7, 7, 7, 7])
    np.testing.assert_array_equal(w, rtc_weights(8, 1, 4))
    ex.push(100 + first)  # the new chunk replaces the plan, like receding
    assert float(ex.next_action()[0]) == 100.0
    assert ExecutorConfig(mode="rtc", execute=3, rtc_delay=2).describe() == "rtc k=3 d=2"
    assert ExecutorConfig(mode="rtc").to_json()["rtc_delay"] == 1
    with pytest.raises(RuntimeError, match="mode='rtc'"):
        ChunkExecutor().rtc_guidance()


@pytest.fixture(scope="module")
def flow_policy():
    torch.manual_seed(0)
    from vlaforge.policies.recipes import make_policy

    return make_policy(
        "octo-tiny", TinyDataset(), head="flow", head_kwargs={"hidden_dim": 16, "num_blocks": 1}, **TINY
    ).eval()


def _batch(policy, n: int = 2):
    ds = TinyDataset()
    items = [ds[i] for i in range(n)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "task"}
    batch["task"] = [it["task"] for it in items]
    return batch


def test_rtc_predict_on_a_real_policy_weights_zero_is_predict_and_weights_one_is_the_prefix(flow_policy):
    batch = _batch(flow_policy)
    H, A = flow_policy.config.chunk, flow_policy.config.action_dim
    prev = torch.linspace(-0.4, 0.4, H * A).reshape(H, A)  # (H, A) robot units
    plain = flow_policy.predict_batch(batch, generator=torch.Generator().manual_seed(5))
    zero = rtc_predict(flow_policy, batch, prev, np.zeros(H, np.float32), torch.Generator().manual_seed(5))
    torch.testing.assert_close(zero, plain)
    one = rtc_predict(flow_policy, batch, prev, np.ones(H, np.float32), torch.Generator().manual_seed(5))
    assert torch.equal(one, prev.expand(2, H, A))
    w = rtc_weights(H, 1, 2)  # frozen, one guided, two free
    mixed = rtc_predict(flow_policy, batch, prev, w, torch.Generator().manual_seed(5))
    assert torch.equal(mixed[:, 0], prev[0].expand(2, A)) and not torch.allclose(mixed[:, 2:], prev[2:])


def test_rtc_predict_rejects_a_head_that_cannot_inpaint():
    from vlaforge.policies.recipes import make_policy

    l1 = make_policy("octo-tiny", TinyDataset(), head="l1", **TINY).eval()
    with pytest.raises(TypeError, match="flow or diffusion head"):
        rtc_predict(l1, _batch(l1), np.zeros((4, 2)), np.ones(4), None)


class RecordingRTCPolicy(ConstantPolicy):
    """ConstantPolicy plus predict_rtc: records the prefix and weights the rollout asked to continue."""

    def __init__(self) -> None:
        super().__init__(history=1, chunk=4)
        self.guidance: list[tuple[np.ndarray, np.ndarray]] = []

    def predict_rtc(self, observations, *, prefix, weights, generator=None) -> ActionChunk:
        self.guidance.append((prefix.copy(), weights.copy()))
        chunk = self.predict(observations, generator=generator)
        return ActionChunk(np.where(weights[:, None] >= 1, prefix, chunk.actions), control_hz=10.0)


def test_rollout_in_rtc_mode_passes_the_previous_chunk_to_the_policy():
    policy = RecordingRTCPolicy()
    env = ReachEnv("reach-mixed", image_size=(IMAGE, IMAGE))
    result = rollout(env, policy, seed=1, executor=ExecutorConfig(mode="rtc", execute=2, rtc_delay=1))
    assert result.success and result.length == 6  # target 0.6 at +0.1 per step
    assert len(result.latencies_s) == 3 and len(policy.guidance) == 2  # the first chunk is sampled freely
    prefix, w = policy.guidance[0]
    np.testing.assert_allclose(prefix[:, 0], [0.1, 0.1, 0.1, 0.1])
    np.testing.assert_array_equal(w, rtc_weights(4, 1, 2))
    with pytest.raises(TypeError, match="inpaint a prefix"):
        rollout(env, ConstantPolicy(history=1), seed=0, executor=ExecutorConfig(mode="rtc"))
