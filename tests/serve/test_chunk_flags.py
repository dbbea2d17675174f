"""What a chunk says about itself reaches the reply: π0-FAST decode failures (flagged, or an error with
``decode_failures="error"``), per chunk also inside a batch, and π0.5's decoded subtask."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from tests.policies.policy_fakes import TASKS, TinyDataset
from vlaforge.policies.pi0.fast_recipes import make_pi0_fast_policy
from vlaforge.policies.pi0.pi05_recipes import make_pi05_policy
from vlaforge.serve.client import PolicyClient, RemotePolicy, ServerError
from vlaforge.serve.server import PolicyServer, chunk_fields
from vlaforge.types import Observation

CHUNK = 8


def _obs(task: int) -> Observation:
    img = np.full((16, 16, 3), 40 + 150 * task, np.uint8)
    return Observation(
        {"front": img, "wrist": 255 - img}, np.array([0.1, -0.2, 0.3], np.float32), TASKS[task]
    )


def _message(task: int) -> dict:
    o = _obs(task)
    return {"images": dict(o.images), "state": o.state, "instruction": o.instruction}


@pytest.fixture(scope="module")
def fast_policy():
    """pi0-fast-tiny whose "generation" is scripted: TASKS[0] -> a valid FAST chunk, TASKS[1] -> text
    tokens and no "|" (the decode-failure fallback), whatever the untrained LM would have said."""
    torch.manual_seed(0)
    ds = TinyDataset(n=8, history=1, chunk=CHUNK)
    policy = make_pi0_fast_policy("pi0-fast-tiny", ds).eval()
    good = policy.fast_to_lm(torch.tensor(policy.fast_tokens(default_collate([ds[0]]))[0]))
    good_row = [*good.tolist(), policy.end_token_id]
    bad_row = [policy.action_prompt_ids[0]] * len(good_row)

    def scripted_generate(batch, use_cache=True):
        rows = [good_row if task == TASKS[0] else bad_row for task in batch["task"]]
        return SimpleNamespace(tokens=torch.tensor(rows))

    policy.generate = scripted_generate
    return policy


def test_chunk_fields():
    assert chunk_fields({}) == {"decode_failed": False}
    assert chunk_fields(None) == {"decode_failed": False}
    assert chunk_fields({"decode_failed": True, "decode_error": "no_end_token: x", "subtask": "grasp"}) == {
        "decode_failed": True,
        "decode_error": "no_end_token: x",
        "subtask": "grasp",
    }


def test_fast_decode_failure_is_flagged_in_single_replies(fast_policy):
    assert fast_policy.predict(_obs(0)).info == {"decode_failed": False}
    info = fast_policy.predict(_obs(1)).info
    assert info["decode_failed"] and info["decode_error"].startswith("no_end_token")
    with PolicyServer(fast_policy, "127.0.0.1", 0).running_in_thread() as srv:
        with PolicyClient("127.0.0.1", srv.port) as c:
            assert c.metadata["decode_failures"] == "flag"
            ok, failed = c.infer(_message(0)), c.infer(_message(1))
            remote = RemotePolicy(c).predict([_obs(1)])
    assert ok["decode_failed"] is False and "decode_error" not in ok
    assert failed["decode_failed"] is True and failed["decode_error"].startswith("no_end_token")
    assert failed["actions"].shape == (CHUNK, 2)  # the fallback chunk, flagged
    assert remote.info["decode_failed"] and remote.info["decode_error"] == failed["decode_error"]
    assert srv.stats.decode_failures == 2 and srv.stats.summary()["decode_failures"] == 2


def test_fast_decode_failure_can_be_an_error(fast_policy):
    with PolicyServer(fast_policy, "127.0.0.1", 0, decode_failures="error").running_in_thread() as srv:
        with PolicyClient("127.0.0.1", srv.port) as c:
            assert c.metadata["decode_failures"] == "error"
            with pytest.raises(ServerError, match="failed to decode: no_end_token") as e:
                c.infer(_message(1))
            assert "decode" in str(e.value.args)
            assert c.infer(_message(0))["decode_failed"] is False  # the connection stays usable
    with pytest.raises(ValueError, match="decode_failures"):
        PolicyServer(fast_policy, decode_failures="ignore")


def test_batched_replies_flag_each_chunk_on_its_own(fast_policy):
    srv = PolicyServer(fast_policy, "127.0.0.1", 0, max_batch=4)
    assert srv.max_batch == 4
    items = [([_obs(t)], 0.0, None) for t in (0, 1, 0, 1)]
    out = srv._infer_batch(items)
    srv._executor.shutdown()
    assert [r[1]["decode_failed"] for r in out] == [False, True, False, True]
    assert all(r[4] == 4 for r in out)  # one forward pass for the four windows
    np.testing.assert_array_equal(out[0][0], fast_policy.predict(_obs(0)).actions)
    np.testing.assert_array_equal(out[1][0], fast_policy.predict(_obs(1)).actions)


def test_pi05_subtask_reaches_single_and_batched_replies():
    torch.manual_seed(0)
    ds = TinyDataset(n=8, history=1, chunk=CHUNK)
    policy = make_pi05_policy("pi05-tiny", ds, subtasks=["grasp the red block", "pull the drawer"]).eval()
    assert policy.config.predict_subtask
    expected = [policy.predict(_obs(t)).info["subtask"] for t in (0, 1)]
    assert all(isinstance(s, str) for s in expected)
    with PolicyServer(policy, "127.0.0.1", 0).running_in_thread() as srv:
        with PolicyClient("127.0.0.1", srv.port) as c:
            replies = [c.infer(_message(t)) for t in (0, 1)]
    assert [r["subtask"] for r in replies] == expected
    assert not any(r["decode_failed"] for r in replies)
    batched = PolicyServer(policy, "127.0.0.1", 0, max_batch=2)
    out = batched._infer_batch([([_obs(t)], 0.0, None) for t in (0, 1)])
    batched._executor.shutdown()
    assert [r[1]["subtask"] for r in out] == expected
