"""The training loop's shortcuts change nothing but the time they take."""

from __future__ import annotations

import pytest
import torch

from kdbench.methods import MethodContext, method_class
from kdbench.models import build_model
from kdbench.spec import Budget
from kdbench.training import loop, trainer


def train(data, method_name, *, augment=False, epochs=2):
    torch.manual_seed(0)
    teacher = build_model("cnn_small", num_classes=10, input_shape=(1, 8, 8)).eval()
    student = build_model("cnn_tiny", num_classes=10, input_shape=(1, 8, 8))
    cls = method_class(method_name)
    method = cls(
        cls.defaults(), MethodContext.for_data(student, teacher, data, torch.device("cpu"))
    )
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    result = loop.fit(
        student,
        data,
        method=method,
        budget=Budget(epochs=epochs, batch_size=32),
        epochs=epochs,
        seed=0,
        augment=augment,
        teacher=teacher,
    )
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    return student, result


@pytest.mark.parametrize("method_name", ["kd", "at", "crd"])
def test_cached_teacher_outputs_train_the_same_student(synthetic, monkeypatch, method_name):
    calls = {"n": 0}
    real = trainer.teacher_outputs

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "teacher_outputs", counting)
    cached, r1 = train(synthetic, method_name)
    assert calls["n"] == 1  # once per fit, not per epoch or step
    monkeypatch.setattr(trainer, "TEACHER_CACHE_BYTES", 0)  # too small: the teacher runs each step
    every_step, r2 = train(synthetic, method_name)
    for (k, a), b in zip(
        cached.state_dict().items(), every_step.state_dict().values(), strict=True
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-4), k
    assert r1.val_acc == pytest.approx(r2.val_acc, abs=0.02)


def test_augmented_batches_are_not_served_from_the_cache(synthetic, monkeypatch):
    from kdbench.data.base import AugmentSpec

    shifted = type(synthetic)(**{**synthetic.__dict__, "augment": AugmentSpec(pad=1)})
    calls = {"n": 0}
    monkeypatch.setattr(trainer, "teacher_outputs", lambda *a, **k: calls.__setitem__("n", 1))
    train(shifted, "kd", augment=True, epochs=1)
    assert calls["n"] == 0


def test_cached_rows_are_the_batch_rows_of_every_output():
    from kdbench.models.base import ModelOutput

    n = 10
    out = ModelOutput(
        logits=torch.randn(n, 3),
        feats=[torch.randn(n, 2, 4, 4), torch.randn(n, 4, 2, 2)],
        embedding=torch.randn(n, 5),
        preact=[torch.randn(n, 2, 4, 4)],
    )
    idx = torch.tensor([7, 2, 9])
    rows, expected = trainer.TeacherCache(out).take(idx), out.map(lambda t: t[idx])
    assert torch.equal(rows.embedding, expected.embedding)
    assert torch.equal(rows.logits, expected.logits)
    for a, b in zip(rows.feats + rows.preact, expected.feats + expected.preact, strict=True):
        assert torch.equal(a, b)


def test_a_groupnorm_network_keeps_its_layout_on_a_cpu():
    # ConvNet-D's instance norm is a GroupNorm, whose CPU kernel is slow in channels_last
    cpu = torch.device("cpu")
    convnet = build_model("convnet3", num_classes=10, input_shape=(1, 28, 28))
    resnet = build_model("resnet8x4", num_classes=10, input_shape=(3, 32, 32))
    heavy = trainer.COMPUTE_BOUND_MACS
    assert not trainer.Precision.resolve("auto", heavy, cpu, convnet).channels_last
    assert not trainer.Precision.resolve("bf16", heavy, cpu, convnet).channels_last
    assert trainer.Precision.resolve("bf16", heavy, cpu, convnet).bf16
    assert trainer.Precision.resolve("auto", heavy, cpu, resnet).channels_last


def test_a_heavy_teacher_of_a_light_student_runs_at_its_own_precision(monkeypatch):
    # resnet32x4 (1.08G MACs) teaching cnn_tiny-sized work: the teacher's forward in bf16 and
    # channels_last where bf16 is fast, the student's in fp32
    from kdbench.data.base import AugmentSpec, DataBundle

    monkeypatch.setattr(trainer, "fast_bf16", lambda device: True)
    x = torch.randint(0, 255, (40, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(40) % 10
    data = DataBundle(
        "t", x, y, x[:8], y[:8], x[:8], y[:8], num_classes=10, augment=AugmentSpec(pad=2)
    )
    torch.manual_seed(0)
    teacher = build_model("resnet32x4", num_classes=10, input_shape=(3, 32, 32)).eval()
    student = build_model("resnet8", num_classes=10, input_shape=(3, 32, 32))
    seen = []
    real = trainer.teacher_batch
    monkeypatch.setattr(
        trainer, "teacher_batch", lambda *a, **k: seen.append(a[4]) or real(*a, **k)
    )
    cls = method_class("kd")
    method = cls(
        cls.defaults(), MethodContext.for_data(student, teacher, data, torch.device("cpu"))
    )
    loop.fit(
        student,
        data,
        method=method,
        budget=Budget(epochs=1, batch_size=20),
        epochs=1,
        seed=0,
        augment=True,
        teacher=teacher,
    )
    assert seen and all(p == trainer.Precision(bf16=True, channels_last=True) for p in seen)
    conv = next(m for m in student.modules() if isinstance(m, torch.nn.Conv2d))
    assert (
        not conv.weight.is_contiguous(memory_format=torch.channels_last)
        or conv.weight.shape[-1] == 1
    )
