import pytest
import torch

from vlaforge.train.config import TrainConfig
from vlaforge.train.ema import EMA
from vlaforge.train.schedule import lr_at


def test_warmup_then_cosine():
    kw = {"base_lr": 1.0, "warmup_steps": 10, "min_ratio": 0.1}
    assert lr_at(0, 0.0, **kw) == pytest.approx(0.1)
    assert lr_at(9, 0.0, **kw) == pytest.approx(1.0)
    assert lr_at(100, 0.5, **kw) == pytest.approx(0.55)
    assert lr_at(100, 1.0, **kw) == pytest.approx(0.1)
    assert lr_at(100, 7.0, **kw) == pytest.approx(0.1)  # progress is clamped


def test_ema_tracks_and_copies():
    m = torch.nn.Linear(2, 1)
    ema = EMA(m, decay=0.5)
    with torch.no_grad():
        m.weight.fill_(1.0)
    for _ in range(50):
        ema.update(m)
    assert torch.allclose(ema.shadow["weight"], torch.ones(1, 2), atol=1e-6)
    with torch.no_grad():
        m.weight.fill_(3.0)
    backup = ema.copy_to(m)
    assert torch.allclose(m.weight, torch.ones(1, 2)) and torch.allclose(
        backup["weight"], torch.full((1, 2), 3.0)
    )


@pytest.mark.parametrize(
    "field,value,match",
    [("steps", 0, "steps"), ("lr", -1, "lr"), ("ema_decay", 1.0, "ema_decay"), ("minutes", 0, "minutes")],
)
def test_train_config_errors_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=f"TrainConfig.{match}"):
        TrainConfig(**{field: value})
