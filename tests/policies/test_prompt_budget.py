"""Prompt budget of the pretrained-LM policies (VLA, π0, π0-FAST): an instruction longer than
``text_max_len`` is shortened to its leading words with a warning ("truncate") or refused ("error");
the template's fixed parts and π0-FAST's state are never cut; old checkpoints still load."""

import functools
import json
import logging

import numpy as np
import pytest
import torch

from tests.policies.policy_fakes import TASKS, TinyDataset
from vlaforge.models.prompt import WordPromptTokenizer, count_tokens, fit_prompts
from vlaforge.policies.octo.policy import Policy
from vlaforge.policies.pi0.config import Pi0Config
from vlaforge.policies.pi0.fast_policy import IGNORE
from vlaforge.policies.recipes import make_policy
from vlaforge.policies.vla.config import VLAConfig
from vlaforge.types import Observation

TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
LONG = " ".join([TASKS[0]] * 12)  # 48 known words: longer than every tiny recipe's budget
RECIPES = {"openvla-tiny": 1, "pi0-tiny": 8, "pi0-fast-tiny": 8}  # recipe -> chunk


def _render(_: int, instruction: str) -> str:
    return TEMPLATE.format(instruction=instruction)


def _words() -> WordPromptTokenizer:
    return WordPromptTokenizer.build([TEMPLATE.format(instruction=t) for t in TASKS])


def _ids(tok: WordPromptTokenizer, text: str) -> list[int]:
    ids, valid = tok.encode([text], 256)
    return ids[0][valid[0]].tolist()


def test_prompts_that_fit_encode_exactly_as_before():
    tok = _words()
    fitted = fit_prompts(tok, TASKS, _render, 24, "error")  # fits: "error" must not fire
    ids, valid = tok.encode([_render(0, t) for t in TASKS], 24)
    assert torch.equal(fitted.ids, ids) and torch.equal(fitted.valid, valid) and fitted.truncated == []


def test_only_the_instruction_is_truncated_to_the_most_words_that_fit():
    tok = _words()
    budget = 20
    fitted = fit_prompts(tok, [TASKS[1], LONG], _render, budget, "truncate")
    ((original, kept),) = fitted.truncated
    assert original == LONG and LONG.startswith(kept) and kept
    assert count_tokens(tok, _render(0, kept)) <= budget  # fits ...
    longer = " ".join(LONG.split()[: len(kept.split()) + 1])
    assert count_tokens(tok, _render(0, longer)) > budget  # ... and one more word would not
    row = fitted.ids[1][fitted.valid[1]].tolist()
    assert row == _ids(tok, _render(0, kept))  # the whole template: its head and its "?\nOut:" end
    head, tail = _ids(tok, "In: What action should the robot take to"), _ids(tok, "?\nOut:")
    assert row[: len(head)] == head and row[-len(tail) :] == tail
    assert fitted.ids[0][fitted.valid[0]].tolist() == _ids(tok, _render(0, TASKS[1]))  # other rows untouched


def test_error_mode_names_the_instruction_length_and_the_budget():
    tok = _words()
    n_fixed = count_tokens(tok, _render(0, ""))
    with pytest.raises(
        ValueError, match=rf"takes 48 prompt tokens .* leaves it {20 - n_fixed} \(text_max_len=20"
    ):
        fit_prompts(tok, [LONG], _render, 20, "error")
    with pytest.raises(ValueError, match="the template alone does not fit"):
        fit_prompts(tok, [TASKS[0]], _render, n_fixed - 1, "truncate")
    with pytest.raises(ValueError, match="prompt_overflow"):
        fit_prompts(tok, TASKS, _render, 20, "drop")


def test_configs_validate_prompt_overflow():
    with pytest.raises(ValueError, match=r"prompt_overflow='drop'.*'truncate', 'error'"):
        VLAConfig(vision={"siglip": {}}, prompt_overflow="drop")
    with pytest.raises(ValueError, match="prompt_overflow"):
        Pi0Config(vision={"siglip": {}}, prompt_overflow="drop")


@functools.cache
def _built(recipe: str):
    torch.manual_seed(0)
    ds = TinyDataset(n=8, history=1, chunk=RECIPES[recipe])
    return recipe, make_policy(recipe, ds), ds


@pytest.fixture(params=sorted(RECIPES))
def built(request):
    return _built(request.param)


def _obs(instruction: str) -> Observation:
    img = np.full((16, 16, 3), 40, np.uint8)
    return Observation(
        {"front": img, "wrist": 255 - img}, np.array([0.1, -0.2, 0.3], np.float32), instruction
    )


def test_long_instruction_is_truncated_with_one_warning_and_predicts(built, caplog):
    recipe, policy, _ = built
    policy.__dict__.pop("_warned_instructions", None)  # the policy is shared between tests
    with caplog.at_level(logging.WARNING, logger="vlaforge.prompt"):
        a = policy.predict(_obs(LONG), generator=torch.Generator().manual_seed(0))
        b = policy.predict(_obs(LONG), generator=torch.Generator().manual_seed(0))
    warnings = [r for r in caplog.records if r.name == "vlaforge.prompt"]
    assert len(warnings) == 1  # once per distinct instruction
    msg = warnings[0].getMessage()
    assert f"text_max_len={policy.config.text_max_len}" in msg and "of 48 words" in msg
    assert a.actions.shape == (RECIPES[recipe], 2) and np.isfinite(a.actions).all()
    np.testing.assert_array_equal(a.actions, b.actions)
    with caplog.at_level(logging.WARNING, logger="vlaforge.prompt"):
        policy.predict(_obs(LONG + " again"))  # another instruction: its own warning
    assert len([r for r in caplog.records if r.name == "vlaforge.prompt"]) == 2


def test_fast_keeps_task_and_state_whole():
    _, policy, _ = _built("pi0-fast-tiny")
    batch = policy.observations_to_batch(_obs(LONG))
    (state,) = policy.state_strings(policy.current_state(batch, 1))
    _, _, ids = policy.embed_prefix(batch)
    text = ids[0][ids[0] != IGNORE].tolist()
    assert len(text) <= policy.config.text_max_len
    head, tail = _ids(policy.tokenizer, "Task:"), _ids(policy.tokenizer, f", State: {state};\n")
    assert text[: len(head)] == head and text[-len(tail) :] == tail


def test_error_mode_refuses_a_long_instruction(built):
    recipe, _, ds = built
    torch.manual_seed(0)
    policy = make_policy(recipe, ds, prompt_overflow="error")
    policy.predict(_obs(TASKS[0]))  # fits
    with pytest.raises(ValueError, match=r"takes 48 prompt tokens .*\(text_max_len="):
        policy.predict(_obs(LONG))


def test_checkpoint_without_the_field_loads_with_the_default(built, tmp_path):
    _, policy, _ = built
    policy.save(tmp_path / "p")
    cfg_file = tmp_path / "p" / "config.json"
    meta = json.loads(cfg_file.read_text())
    assert meta["config"].pop("prompt_overflow") == "truncate"
    cfg_file.write_text(json.dumps(meta, indent=2))  # as written before the field existed
    loaded = Policy.load(tmp_path / "p")
    assert loaded.config == policy.config
    for task in TASKS:
        np.testing.assert_array_equal(
            policy.predict(_obs(task), generator=torch.Generator().manual_seed(0)).actions,
            loaded.predict(_obs(task), generator=torch.Generator().manual_seed(0)).actions,
        )
