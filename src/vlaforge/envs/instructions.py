"""Natural-language instructions for the 50 Meta-World tasks.

Meta-World ships no language. Each task gets a few phrasings, so that a recorded dataset holds
several ways of saying the same thing (the episode's phrasing is picked from its seed) and a policy
cannot just memorise one string per task. `HELDOUT_REPHRASINGS` holds, for MT10, one more phrasing
per task that never appears in training, to measure language robustness at evaluation time.
"""

from __future__ import annotations

import numpy as np

from vlaforge.envs.tasks import MT10, canonical_task

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "assembly-v3": (
        "put the ring on the peg",
        "pick up the nut and place it onto the peg",
        "assemble the ring onto the peg",
    ),
    "basketball-v3": (
        "dunk the ball into the basket",
        "put the basketball in the hoop",
        "pick up the ball and drop it through the hoop",
    ),
    "bin-picking-v3": (
        "move the puck from one bin to the other",
        "pick the puck out of the bin and place it in the other bin",
        "transfer the cube to the second bin",
    ),
    "box-close-v3": (
        "close the box",
        "put the lid on the box",
        "pick up the lid and close the box with it",
    ),
    "button-press-topdown-v3": (
        "press the button from the top",
        "push the button down",
        "press down on the button",
    ),
    "button-press-topdown-wall-v3": (
        "press the button from the top behind the wall",
        "reach over the wall and push the button down",
    ),
    "button-press-v3": (
        "press the button",
        "push the button in",
        "press the button from the front",
    ),
    "button-press-wall-v3": (
        "press the button behind the wall",
        "go around the wall and push the button",
    ),
    "coffee-button-v3": (
        "press the button on the coffee machine",
        "push the coffee machine's button",
        "start the coffee machine",
    ),
    "coffee-pull-v3": (
        "pull the mug out of the coffee machine",
        "take the cup away from the coffee machine",
        "slide the mug out from under the coffee machine",
    ),
    "coffee-push-v3": (
        "push the mug under the coffee machine",
        "slide the cup into the coffee machine",
        "put the mug under the coffee spout",
    ),
    "dial-turn-v3": (
        "turn the dial",
        "rotate the dial halfway around",
        "twist the knob",
    ),
    "disassemble-v3": (
        "take the ring off the peg",
        "pick the nut up off the peg",
        "remove the ring from the peg",
    ),
    "door-close-v3": (
        "close the door",
        "push the door shut",
        "swing the door closed",
    ),
    "door-lock-v3": (
        "lock the door",
        "turn the lock to lock the door",
        "rotate the door lock down",
    ),
    "door-open-v3": (
        "open the door",
        "pull the door open",
        "swing the door open",
    ),
    "door-unlock-v3": (
        "unlock the door",
        "turn the lock to unlock the door",
        "rotate the door lock back",
    ),
    "hand-insert-v3": (
        "put the gripper into the hole",
        "insert the hand into the hole in the table",
        "reach down into the hole",
    ),
    "drawer-close-v3": (
        "close the drawer",
        "push the drawer shut",
        "slide the drawer closed",
    ),
    "drawer-open-v3": (
        "open the drawer",
        "pull the drawer open",
        "slide the drawer out",
    ),
    "faucet-open-v3": (
        "open the faucet",
        "turn the faucet on",
        "rotate the faucet handle to open it",
    ),
    "faucet-close-v3": (
        "close the faucet",
        "turn the faucet off",
        "rotate the faucet handle to close it",
    ),
    "hammer-v3": (
        "hammer the nail into the wall",
        "pick up the hammer and drive in the nail",
        "use the hammer to knock the peg in",
    ),
    "handle-press-side-v3": (
        "press the handle down from the side",
        "push the side handle down",
    ),
    "handle-press-v3": (
        "press the handle down",
        "push the handle down",
        "push down on the handle",
    ),
    "handle-pull-side-v3": (
        "pull the handle up from the side",
        "lift the side handle up",
    ),
    "handle-pull-v3": (
        "pull the handle up",
        "lift the handle",
        "pull up on the handle",
    ),
    "lever-pull-v3": (
        "pull the lever up",
        "raise the lever",
        "lift the lever all the way",
    ),
    "pick-place-wall-v3": (
        "pick up the puck and place it on the goal behind the wall",
        "move the puck over the wall to the goal",
    ),
    "pick-out-of-hole-v3": (
        "pick the puck out of the hole",
        "lift the puck out of the hole",
        "take the puck out of the hole and raise it",
    ),
    "pick-place-v3": (
        "put the puck on the goal",
        "pick up the puck and place it at the goal",
        "move the puck to the target",
    ),
    "plate-slide-v3": (
        "slide the plate into the goal",
        "push the plate into the net",
        "slide the plate forward into the cabinet",
    ),
    "plate-slide-side-v3": (
        "slide the plate into the goal from the side",
        "push the plate sideways into the net",
    ),
    "plate-slide-back-v3": (
        "slide the plate out of the goal",
        "pull the plate back out of the net",
        "get the plate back out of the cabinet",
    ),
    "plate-slide-back-side-v3": (
        "slide the plate out of the goal sideways",
        "pull the plate out of the net to the side",
    ),
    "peg-insert-side-v3": (
        "insert the peg into the hole",
        "put the peg into the hole from the side",
        "pick up the peg and slide it into the box",
    ),
    "peg-unplug-side-v3": (
        "unplug the peg",
        "pull the peg out of the hole",
        "take the peg out of the box sideways",
    ),
    "soccer-v3": (
        "kick the ball into the goal",
        "push the soccer ball into the net",
        "score a goal with the ball",
    ),
    "stick-push-v3": (
        "push the box with the stick",
        "pick up the stick and use it to push the container",
    ),
    "stick-pull-v3": (
        "pull the box with the stick",
        "pick up the stick and use it to pull the container",
    ),
    "push-v3": (
        "push the puck to the goal",
        "slide the puck to the target",
        "push the puck onto the goal",
    ),
    "push-wall-v3": (
        "push the puck around the wall to the goal",
        "slide the puck past the wall to the target",
    ),
    "push-back-v3": (
        "pull the puck back to the goal",
        "slide the puck backwards to the target",
    ),
    "reach-v3": (
        "reach the goal",
        "move the gripper to the target",
        "touch the goal position",
    ),
    "reach-wall-v3": (
        "reach over the wall to the goal",
        "move the gripper to the target behind the wall",
    ),
    "shelf-place-v3": (
        "put the block on the shelf",
        "pick up the block and place it on the shelf",
        "move the cube onto the shelf",
    ),
    "sweep-into-v3": (
        "sweep the puck into the hole",
        "push the puck into the hole",
        "slide the block into the hole",
    ),
    "sweep-v3": (
        "sweep the puck off the table",
        "push the puck off the edge of the table",
        "slide the block off the table",
    ),
    "window-open-v3": (
        "open the window",
        "slide the window open",
        "push the window open",
    ),
    "window-close-v3": (
        "close the window",
        "slide the window shut",
        "push the window closed",
    ),
}

# One unseen phrasing per MT10 task; none of them appears in INSTRUCTIONS.
HELDOUT_REPHRASINGS: dict[str, str] = {
    "reach-v3": "bring your hand over to the target spot",
    "push-v3": "nudge the puck along the table until it sits on the target",
    "pick-place-v3": "grab the puck and set it down on the target",
    "door-open-v3": "swing that door open all the way",
    "drawer-open-v3": "pull out the drawer",
    "drawer-close-v3": "shut the drawer",
    "button-press-topdown-v3": "push the button in from above",
    "peg-insert-side-v3": "grab the peg and plug it into the hole",
    "window-open-v3": "slide the window pane aside to open it",
    "window-close-v3": "shut the window",
}

assert set(HELDOUT_REPHRASINGS) == set(MT10)

# Keeps the phrasing choice statistically independent of the configuration (which is seed % 50).
_PHRASING_STREAM = 0x1A5


def instructions_for(task: str) -> list[str]:
    """All training phrasings of `task` ('drawer-open' or 'drawer-open-v3'), first = canonical."""
    return list(INSTRUCTIONS[canonical_task(task)])


def instruction_for_seed(task: str, seed: int) -> str:
    """The phrasing used for the episode with this seed: deterministic, and uniform over phrasings."""
    phrasings = INSTRUCTIONS[canonical_task(task)]
    index = int(np.random.default_rng([int(seed), _PHRASING_STREAM]).integers(len(phrasings)))
    return phrasings[index]


def heldout_instruction(task: str) -> str:
    """The held-out rephrasing of an MT10 task (raises KeyError naming the MT10 tasks otherwise)."""
    key = canonical_task(task)
    if key not in HELDOUT_REPHRASINGS:
        raise KeyError(f"no held-out rephrasing for '{key}'; they exist for MT10 only: {', '.join(MT10)}")
    return HELDOUT_REPHRASINGS[key]
