"""The unlabeled pool: methods that declare ``Needs(transfer_set=True)`` train on the training
images plus the pool (label -1); every other method never sees it."""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch

from kdbench.data import DataBundle
from kdbench.data.synthetic import make_synthetic
from kdbench.methods import method_class
from kdbench.methods.base import Method, MethodContext, Needs, Step
from kdbench.methods.pseudo_label import PseudoLabel
from kdbench.models import build_model
from kdbench.models.base import ModelOutput
from kdbench.spec import Budget
from kdbench.training.loop import fit

SHAPE = (1, 8, 8)
N_TRAIN, N_POOL = 40, 24
BUDGET = Budget(epochs=2, batch_size=16, lr=0.05, weight_decay=0.0)


def bundle(pool: bool) -> DataBundle:
    x, y = make_synthetic(n=N_TRAIN + 20 + N_POOL)
    return DataBundle(
        name="tiny",
        train_x=x[:N_TRAIN],
        train_y=y[:N_TRAIN],
        val_x=x[N_TRAIN : N_TRAIN + 20],
        val_y=y[N_TRAIN : N_TRAIN + 20],
        test_x=x[N_TRAIN : N_TRAIN + 20],
        test_y=y[N_TRAIN : N_TRAIN + 20],
        num_classes=10,
        unlabeled_x=x[N_TRAIN + 20 :] if pool else None,
    )


def confident_teacher():
    torch.manual_seed(1)
    teacher = build_model("cnn_small", num_classes=10, input_shape=SHAPE).eval()
    with torch.no_grad():  # a trained teacher is confident: sharpen its classifier
        teacher.fc.weight.mul_(300)
    return teacher


def train(name: str, data: DataBundle, hp: dict | None = None):
    torch.manual_seed(0)
    student = build_model("cnn_tiny", num_classes=10, input_shape=SHAPE)
    teacher = confident_teacher()
    cls = method_class(name)
    method = cls(
        {**cls.defaults(), **(hp or {})},
        MethodContext.for_data(student, teacher, data, torch.device("cpu")),
    )
    result = fit(
        student,
        data,
        method=method,
        budget=BUDGET,
        epochs=BUDGET.epochs,
        seed=0,
        augment=False,
        teacher=teacher,
    )
    return student, result


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


class Spy(Method):
    """Records what the loop hands a transfer-set method."""

    name = "spy"
    needs: ClassVar[Needs] = Needs(teacher=False, indices=True, transfer_set=True)
    steps: ClassVar[list[tuple[torch.Tensor, torch.Tensor]]] = []

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.index is not None
        Spy.steps.append((step.index.clone(), step.y.clone()))
        return {"zero": step.student.logits.sum() * 0.0}


def test_a_transfer_set_method_iterates_over_train_and_pool_with_label_minus_one():
    data = bundle(pool=True)
    Spy.steps = []
    student = build_model("cnn_tiny", num_classes=10, input_shape=SHAPE)
    ctx = MethodContext.for_data(student, None, data, torch.device("cpu"))
    result = fit(student, data, method=Spy({}, ctx), budget=BUDGET, epochs=2, seed=0, augment=False)
    assert result.images_seen == 2 * (N_TRAIN + N_POOL)
    index = torch.cat([i for i, _ in Spy.steps])
    y = torch.cat([y for _, y in Spy.steps])
    assert sorted(index.tolist()) == sorted(list(range(N_TRAIN + N_POOL)) * 2)
    assert (y[index >= N_TRAIN] == -1).all()
    assert torch.equal(y[index < N_TRAIN], data.train_y[index[index < N_TRAIN]])


def test_pseudo_label_sees_the_pool_and_it_changes_the_student():
    with_pool, r_pool = train("pseudo_label", bundle(pool=True))
    without, r_none = train("pseudo_label", bundle(pool=False))
    assert r_none.images_seen == BUDGET.epochs * N_TRAIN
    assert r_pool.images_seen == BUDGET.epochs * (N_TRAIN + N_POOL)
    assert not same_weights(with_pool, without)
    assert all(math.isfinite(s.train_loss) for s in r_pool.curve)


@pytest.mark.parametrize("name", ["kd", "scratch"])
def test_a_method_without_transfer_set_ignores_the_pool(name):
    with_pool, r_pool = train(name, bundle(pool=True))
    without, r_none = train(name, bundle(pool=False))
    assert r_pool.images_seen == r_none.images_seen == BUDGET.epochs * N_TRAIN
    assert same_weights(with_pool, without)


def test_pool_images_enter_pseudo_label_only_through_pseudo_labels():
    # Rows 0, 1: pool images (y = -1), teacher confident on row 0 only; rows 2, 3: training
    # images, both in the labelled share (labeled_fraction = 1), teacher confident on both.
    s = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    t = torch.tensor([[0.0, 0.0, 9.0], [0.0, 0.5, 0.4], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0]])
    y = torch.tensor([-1, -1, 1, 2])
    method = PseudoLabel({**PseudoLabel.defaults(), "labeled_fraction": 1.0}, None)  # type: ignore[arg-type]
    terms = method.loss(
        Step(
            x=s,
            y=y,
            student=ModelOutput(s),
            teacher=ModelOutput(t),
            index=torch.tensor([50, 51, 0, 1]),
        )
    )
    ce = torch.nn.functional.cross_entropy
    expected_true = (ce(s[2:3], y[2:3]) + ce(s[3:4], y[3:4])) / 4  # true labels: train rows only
    expected_pseudo = ce(s[0:1], torch.tensor([2])) / 4  # the confident pool row, teacher's argmax
    assert terms["ce"].item() == pytest.approx(expected_true.item(), rel=1e-6)
    assert terms["pseudo"].item() == pytest.approx(expected_pseudo.item(), rel=1e-6)


def test_a_pool_must_hold_images_of_the_training_shape():
    x, y = make_synthetic(n=40)
    with pytest.raises(ValueError, match="unlabeled pool"):
        DataBundle("bad", x, y, x, y, x, y, 10, unlabeled_x=torch.zeros(3, 1, 4, 4))
    data = DataBundle(
        "ok", x, y, x, y, x, y, 10, unlabeled_x=torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    )
    tx, ty = data.transfer_set()  # a uint8 pool beside float training images: both in [0, 1]
    assert tx.dtype == torch.float32 and len(tx) == 43 and ty[-3:].tolist() == [-1, -1, -1]
