"""``budget.compile``: torch.compile'd forward passes train the same student as eager ones."""

from __future__ import annotations

import pytest
import torch

from kdbench.errors import SuiteError
from kdbench.methods import MethodContext, method_class
from kdbench.models import build_model
from kdbench.spec import Budget
from kdbench.training import loop
from kdbench.validation import parse_suite


def train(data, compile_mode: str):
    torch.manual_seed(0)
    teacher = build_model("cnn_small", num_classes=10, input_shape=(1, 8, 8)).eval()
    student = build_model("cnn_tiny", num_classes=10, input_shape=(1, 8, 8))
    cls = method_class("kd")
    method = cls(
        cls.defaults(), MethodContext.for_data(student, teacher, data, torch.device("cpu"))
    )
    result = loop.fit(
        student,
        data,
        method=method,
        budget=Budget(epochs=2, batch_size=32, compile=compile_mode),
        epochs=2,
        seed=0,
        augment=True,  # the teacher runs every step, through its compiled forward pass
        teacher=teacher,
    )
    return student, result


@pytest.mark.slow
def test_a_compiled_trial_trains_the_student_an_eager_one_does(synthetic, monkeypatch):
    from kdbench.data.base import AugmentSpec
    from kdbench.training import compiled

    data = type(synthetic)(**{**synthetic.__dict__, "augment": AugmentSpec(pad=1, flip=True)})
    eager, r_eager = train(data, "none")
    calls = []
    real = compiled._compile
    monkeypatch.setattr(compiled, "_compile", lambda fn, mode: calls.append(mode) or real(fn, mode))
    fast, r_fast = train(data, "default")
    assert calls == ["default", "default"]  # the student and the teacher
    # compiled kernels reorder floating-point sums: close, not bit-equal, after 2 epochs
    for (k, a), b in zip(eager.state_dict().items(), fast.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-3, rtol=1e-3), k
    assert r_fast.val_acc == pytest.approx(r_eager.val_acc, abs=0.02)
    assert r_fast.curve[-1].train_loss == pytest.approx(r_eager.curve[-1].train_loss, rel=1e-3)


def test_compile_modes_are_checked_before_anything_runs():
    raw = {
        "name": "c",
        "datasets": ["digits"],
        "pairs": [{"teacher": "cnn_wide", "student": "cnn_tiny"}],
        "methods": ["kd"],
        "seeds": [0],
    }
    assert parse_suite({**raw, "budget": {"compile": "reduce-overhead"}}).budget.compile == (
        "reduce-overhead"
    )
    with pytest.raises(SuiteError) as err:
        parse_suite({**raw, "budget": {"compile": "fast"}})
    message = str(err.value)
    assert "budget.compile" in message and "'fast'" in message
    assert "none" in message and "max-autotune" in message
