"""kdbench's training loop against the loop users would otherwise write, in one process.

The reference loop is the reference repositories' (RepDistiller, mdistiller): a torch
DataLoader over the images with torchvision per-sample transforms (ToTensor, Normalize, and
RandomCrop + RandomHorizontalFlip where the data set augments; the crop pads with the mean
colour, as kdbench's does), fp32, the teacher's forward pass every step, ``.item()`` every
step, evaluation through a DataLoader, batches moved to the device one at a time. kdbench's
loop is ``kdbench.training.loop.fit``, exactly as a trial runs it, timed from the call (its
teacher cache included). Same model, data, epochs, method, hyperparameters, seed and thread
count; both validate after every epoch.

Cases: scratch, kd, at and crd on digits (cnn_wide → cnn_tiny) and on CIFAR-shaped synthetic
data (3×32×32, 10 classes, CIFAR's crops and flips; smooth class-coloured fields a resnet8x4
learns in a few epochs) with resnet32x4 → resnet8x4. Each teacher is trained first (digits:
30 epochs; CIFAR-shaped: ``CIFAR_TEACHER``), so kd, at and crd have something to distil.

**Time box.** The whole run fits ``--minutes`` (default 8.5) on any machine: the epochs of each
group are chosen from the measured time of one reference epoch (digits: ``DIGITS_SHARE`` of
the box; CIFAR-shaped: what is left once its teacher is trained), at least 1, so a slower CPU
trains fewer epochs rather than running past the box.

**Share of peak.** At the start the machine's own peak is measured (``roofline``: the fastest
of a large matrix product and a large 3×3 convolution, fp32, and bf16 where the device has it
fast). Beside each loop's images/s stands its share of the peak of the precision it computes
in: the training FLOPs of the images it trained a second (the student's forward and backward,
3× its MACs, and the teacher's forward where the method reads it; 2 FLOPs a MAC) over that
peak. Where kdbench serves the teacher from its cache (digits, not augmented), the teacher's
FLOPs still count: the share is of the work the reference does, what a user gets done.

**Accuracy.** Each final student is then scored, outside the timed run, on the validation and
test images together by one evaluator. The two loops' accuracies count as the same when they
differ by no more than that case's seed noise, measured in the same run: kdbench's loop trains
it again with other seeds (digits: 1-3; CIFAR-shaped, for time: 1-2 for scratch and kd, whose
noise at and crd take), and the tolerance (± in the table) is ``NOISE_SIGMAS`` × the RMS of
their differences from seed 0, at least ``ACC_FLOOR``. A loop that trains worse than seed
noise shows DIFFERENT.

**The teacher's precision** (CIFAR-shaped, where the device has fast bf16): the teacher's
forward pass timed in fp32 and bf16, and how many of its predictions bf16 keeps.

    python benchmarks/trial_speed.py [--device cpu|cuda] [--minutes 8.5] [--threads 2]
                                     [--groups digits,cifar] [--methods scratch,kd,at,crd]

Prints images/s of both loops, their ratio, each one's share of peak, the held-out accuracy
of each and the tolerance, per case; the last two lines are ``digits speedup vs reference:
X.XXx`` and ``cifar speedup vs reference: X.XXx`` (the smallest ratio of each group).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from cifar_shaped import cifar_shaped
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from kdbench.data import DataBundle, load_dataset
from kdbench.methods import MethodContext, Step, method_class
from kdbench.methods.scratch import Scratch
from kdbench.models import build_model
from kdbench.models.base import count_macs
from kdbench.scheduler.estimate import arch_macs, image_flops
from kdbench.spec import Budget
from kdbench.training.loop import accuracy, fit, predict
from kdbench.training.trainer import Precision, fast_bf16, lr_at

METHODS = ["scratch", "kd", "at", "crd"]
HPARAMS = {"at": {"beta": 100.0}}
"""at's default β (1000) makes this 1k-parameter student's training unstable on digits (val
accuracy 59-72% between two data orders, against ~95% for the others): a comparison of loops
needs a method that trains the same way twice. Both loops use the same values."""
ACC_FLOOR = 0.025
"""The smallest tolerance, however close a few seeds came: 18 of digits' 719 held-out images.
Five seeds of each loop on digits spread 94.2-96.1% (scratch) and 95.5-97.1% (crd), with no
difference between the loops' means beyond 0.6 points; three seeds can happen to agree more."""
NOISE_SIGMAS = 3.0
"""The tolerance in standard deviations of the difference between two runs (were the spread
known exactly, a loop equivalent to kdbench's would show DIFFERENT in 0.3% of cases; estimated
from one to three seeds, somewhat more often)."""


CIFAR_TEACHER = Budget(epochs=6, optimizer="adam", lr=1e-3)
"""resnet32x4 on the CIFAR-shaped set: 6 epochs of Adam reach 100% on val (SGD at lr 0.05:
16-46%). Trained this long so that kd's student is stable: after 3 epochs under a teacher of
2 epochs (96.5%) kd's students scored 88.1, 76.3 and 74.0% over three seeds, under this one
94.8, 92.0 and 95.2% (scratch: 98.5, 98.2, 97.4)."""
CIFAR_STUDENT = Budget(epochs=1, batch_size=64, lr=0.01)
"""The CIFAR-shaped students' recipe (epochs set by the time box). lr 0.01, not RepDistiller's
0.05: at 0.05 kd's T²-scaled gradient made its students of 2 epochs differ by 10-17 points from
one seed to the next (83.0 and 75.9; at 0.02: 87.9, 78.0, 77.0), a tolerance no broken loop
could fall outside; at 0.01 three seeds gave 76.2, 74.1 and 74.8."""
DIGITS_SHARE = 0.15
"""The share of the time box the digits cases get; the CIFAR-shaped ones take what is left."""


class Images(Dataset):
    """(image, label, index) with per-sample torchvision transforms: the reference pipeline."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: T.Transform) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(self.x[i]), int(self.y[i]), i


def transforms(data: DataBundle, augment: bool) -> T.Transform:
    steps: list[T.Transform] = [T.ToDtype(torch.float32, scale=True)]
    if augment and data.augment.pad:
        # Padded with the mean colour, as kdbench's batched crops pad (zeros after normalising);
        # torchvision's default black border trained at (β = 100) on the CIFAR-shaped colour
        # fields 3-7 points worse, a difference of augmentation rather than of loop. Costs the same.
        steps.append(
            T.RandomCrop(data.input_shape[-1], padding=data.augment.pad, fill=list(data.mean))
        )
    if augment and data.augment.flip:
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.Normalize(data.mean, data.std))
    return T.Compose(steps)


def reference_fit(
    student, teacher, method, data: DataBundle, budget: Budget, epochs: int, seed: int, device
):
    """The plain loop: DataLoader, per-sample transforms, teacher every step, .item() every step."""
    torch.manual_seed(seed)
    train = DataLoader(
        Images(data.train_x, data.train_y, transforms(data, augment=True)),
        batch_size=budget.batch_size,
        shuffle=True,
        drop_last=False,
    )
    val = DataLoader(
        Images(data.val_x, data.val_y, transforms(data, augment=False)), batch_size=256
    )
    # torch.optim.SGD as the reference repositories create it (PyTorch's default per-parameter
    # loop on a CPU; kdbench asks for the multi-tensor one).
    opt = torch.optim.SGD(
        list(student.parameters()) + list(method.parameters()),
        lr=budget.lr,
        momentum=budget.momentum,
        weight_decay=budget.weight_decay,
    )
    seen, start = 0, time.perf_counter()
    acc = 0.0
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at(budget, epoch, epochs)
        student.train()
        method.train()
        for x, y, idx in train:
            if len(y) < 2:
                continue
            x, y = x.to(device), y.to(device)  # as the reference loops' .cuda() calls
            t_out = None
            if method.needs.teacher:
                with torch.no_grad():
                    t_out = teacher.forward_features(x)
            terms = method.loss(
                Step(
                    x=x,
                    y=y,
                    student=student.forward_features(x),
                    teacher=t_out,
                    index=idx.to(device),
                    epoch=epoch,
                    epochs=epochs,
                )
            )
            loss = torch.stack(list(terms.values())).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()  # what the reference loops log every step
            seen += len(y)
        student.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y, _ in val:
                x, y = x.to(device), y.to(device)
                correct += (student(x).argmax(1) == y).sum().item()
                total += len(y)
        acc = correct / total
    return seen / (time.perf_counter() - start), acc


def kdbench_fit(
    student, teacher, method, data: DataBundle, budget: Budget, epochs: int, seed: int, device
):
    start = time.perf_counter()  # from the call: the teacher's cached outputs count too
    result = fit(
        student,
        data,
        method=method,
        budget=budget,
        epochs=epochs,
        seed=seed,
        augment=True,
        teacher=teacher,
        device=device,
    )
    return result.images_seen / (time.perf_counter() - start), result.val_acc


def build(method_name, data, teacher_arch, student_arch, teacher_weights, device):
    """A fresh teacher (trained weights, frozen), student and method, the same for both loops."""
    torch.manual_seed(0)
    shape = data.input_shape
    teacher = build_model(teacher_arch, num_classes=data.num_classes, input_shape=shape)
    teacher.load_state_dict(teacher_weights)
    teacher.to(device).eval().requires_grad_(False)
    student = build_model(student_arch, num_classes=data.num_classes, input_shape=shape).to(device)
    cls = method_class(method_name)
    ctx = MethodContext.for_data(student, teacher, data, device)
    method = cls({**cls.defaults(), **HPARAMS.get(method_name, {})}, ctx).to(device)
    return student, teacher, method


@dataclass
class Case:
    """One group of methods on one pair: what both loops train, and for how long."""

    group: str
    data: DataBundle
    teacher_arch: str
    student_arch: str
    teacher_weights: dict[str, torch.Tensor]
    budget: Budget
    noise_seeds: tuple[int, ...]
    noise_of: dict[str, str]
    device: torch.device

    def models(self):
        return self.teacher_arch, self.student_arch, self.teacher_weights, self.device

    def flops_per_image(self, method_name: str) -> float:
        """``estimate.image_flops`` of this pair: the teacher's forward counts where the method
        reads it."""
        shape = self.data.input_shape
        t = (
            arch_macs(self.teacher_arch, 10, shape)
            if method_class(method_name).needs.teacher
            else 0
        )
        return image_flops(arch_macs(self.student_arch, 10, shape), t)


def run_case(case: Case, peaks: dict[str, float], methods: list[str]) -> list[float]:
    """Both loops on every method, then kdbench's loop again with each of the noise seeds (or,
    for a method ``noise_of`` maps to one measured before it, that one's seed noise). Returns
    the ratios and prints a line per method."""
    ratios, tolerances, borrowed = [], {}, set()
    epochs = case.budget.epochs
    for method_name in methods:
        results = {}
        for loop, runner in (("reference", reference_fit), ("kdbench", kdbench_fit)):
            student, teacher, method = build(method_name, case.data, *case.models())
            ips, _ = runner(
                student, teacher, method, case.data, case.budget, epochs, 0, case.device
            )
            results[loop] = ips, held_out_accuracy(student, case.data), precision_of(student, case)
        (ref_ips, ref_acc, _), (kd_ips, kd_acc, kd_prec) = results["reference"], results["kdbench"]
        if case.noise_of.get(method_name) in tolerances:
            borrowed.add(method_name)
            tolerance = tolerances[case.noise_of[method_name]]
        else:
            # This case's seed noise: the RMS of kdbench's accuracy differences from seed 0
            # estimates the spread of the difference between two runs.
            shifts = []
            for seed in case.noise_seeds:
                student, teacher, method = build(method_name, case.data, *case.models())
                kdbench_fit(
                    student, teacher, method, case.data, case.budget, epochs, seed, case.device
                )
                shifts.append(held_out_accuracy(student, case.data) - kd_acc)
            rms = math.sqrt(sum(d * d for d in shifts) / len(shifts))
            tolerance = tolerances[method_name] = max(ACC_FLOOR, NOISE_SIGMAS * rms)
        ratios.append(kd_ips / ref_ips)
        same = abs(ref_acc - kd_acc) <= tolerance + 1e-9
        flops = case.flops_per_image(method_name)
        ref_share = ref_ips * flops / 1e9 / peaks["fp32"]
        kd_share = kd_ips * flops / 1e9 / peaks[kd_prec]
        print(
            f"{case.group:<7} {method_name:<7} reference {ref_ips:6.0f} img/s "
            f"({100 * ref_share:4.1f}% of fp32 peak)  kdbench {kd_ips:6.0f} img/s "
            f"({100 * kd_share:4.1f}% of {kd_prec} peak)  {ratios[-1]:5.2f}x   acc "
            f"{100 * ref_acc:5.1f} / {100 * kd_acc:5.1f} ± {100 * tolerance:4.1f}  "
            f"{'same' if same else 'DIFFERENT'}"
            + (f" ({case.noise_of[method_name]}'s noise)" if method_name in borrowed else ""),
            flush=True,
        )
    return ratios


def precision_of(student, case: Case) -> str:
    """The precision kdbench's loop trains ``student`` at (``budget.precision: auto``)."""
    macs = count_macs(student, case.data.input_shape)
    return "bf16" if Precision.resolve("auto", macs, case.device, student).bf16 else "fp32"


def held_out_accuracy(model, data: DataBundle) -> float:
    """The accuracy the verdict compares, on the validation and test images together, by one
    evaluator for both loops' students (kdbench's batched ``predict``, in the precision a
    trial would use), after the timed run: more images than the validation split alone, so
    less sampling noise (CIFAR-shaped: 1,280 rather than 256)."""
    device = next(model.parameters()).device
    precision = Precision.resolve("auto", count_macs(model, data.input_shape), device, model)
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    x = torch.cat([data.val_x, data.test_x]).to(device)
    y = torch.cat([data.val_y, data.test_y]).to(device)
    return accuracy(predict(model, data, x, precision=precision), y)


def trained_teacher(
    arch: str, data: DataBundle, budget: Budget, device: torch.device
) -> tuple[dict[str, torch.Tensor], float]:
    """The teacher's weights after ``budget`` on ``data`` (kdbench's loop), and its val accuracy."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=data.num_classes, input_shape=data.input_shape)
    model.to(device)
    ctx = MethodContext.for_data(model, None, data, device)
    result = fit(
        model,
        data,
        method=Scratch({}, ctx),
        budget=budget,
        epochs=budget.epochs,
        seed=0,
        augment=True,
        device=device,
    )
    weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return weights, result.val_acc


def teacher_precision(arch: str, weights, data: DataBundle, device: torch.device) -> str:
    """The lever on a kd step's largest cost, the teacher's forward pass (resnet32x4: 1.08G
    MACs an image against resnet8x4's 3 × 0.18G): the teacher in bf16, measured for its time
    and for whether it keeps its predictions, on the held-out images, at T = 4 as kd reads it."""
    teacher = build_model(arch, num_classes=data.num_classes, input_shape=data.input_shape)
    teacher.load_state_dict(weights)
    teacher.to(device).eval().requires_grad_(False).to(memory_format=torch.channels_last)
    x = data.val_x.to(device)  # 256 images: the verdict's 1,280 would take 20 s of the box
    outs, times = {}, {}
    for name, precision in (
        ("fp32", Precision(channels_last=True)),
        ("bf16", Precision(True, True)),
    ):
        outs[name] = predict(teacher, data, x, batch_size=64, precision=precision)
        batch = precision.layout(data.normalize(x[:64]))

        def forward(batch=batch, precision=precision):
            with torch.no_grad(), precision.autocast(device):
                teacher(batch)

        times[name] = _timed(forward, device)
    agree = (outs["fp32"].argmax(1) == outs["bf16"].argmax(1)).float().mean().item()
    p32, p16 = (torch.softmax(outs[k] / 4.0, dim=1) for k in ("fp32", "bf16"))
    return (
        f"teacher {arch} forward, batch 64: fp32 {1000 * times['fp32']:.0f} ms, bf16 "
        f"{1000 * times['bf16']:.0f} ms; on {len(x):,} validation images bf16 keeps "
        f"{100 * agree:.2f}% of its top-1 predictions, softened (T=4) probabilities within "
        f"{(p32 - p16).abs().max().item():.4f} (mean {(p32 - p16).abs().mean().item():.5f})"
    )


def _timed(fn, device: torch.device, seconds: float = 0.5, repeat: int = 3) -> float:
    """The fastest of at least ``repeat`` calls of ``fn``, calling it for at least ``seconds``
    after two warm-up calls (oneDNN/cuDNN pick their kernels; a core leaves its idle clock)."""
    fn()
    fn()
    best, spent, calls = math.inf, 0.0, 0
    while calls < repeat or spent < seconds:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        took = time.perf_counter() - t0
        best, spent, calls = min(best, took), spent + took, calls + 1
    return best


def roofline(device: torch.device) -> dict[str, float]:
    """The machine's own peak, measured: GFLOP/s of the fastest of a large square matrix
    product and a large 3×3 convolution (64 × 256 channels × 16 × 16, channels_last, without
    autograd), in fp32, and in bf16 where the device computes it fast. A training loop's
    share of it is its training FLOPs a second over this."""
    n = 4096 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device)
    conv = conv.to(memory_format=torch.channels_last).requires_grad_(False)
    batch = 256 if device.type == "cuda" else 64
    x = torch.randn(batch, 256, 16, 16, device=device).contiguous(memory_format=torch.channels_last)
    conv_flops = 2.0 * batch * 256 * 256 * 9 * 16 * 16
    peaks = {}
    dtypes = {"fp32": torch.float32}
    if fast_bf16(device):
        dtypes["bf16"] = torch.bfloat16
    # TF32 would inflate the fp32 matrix product on a GPU: the loops compute in true fp32.
    with torch.no_grad():
        for name, dtype in dtypes.items():
            am, cm, xm = a.to(dtype), conv.to(dtype), x.to(dtype)
            # A peak taken once at the start read 166 GFLOP/s in one run and 231-245 in four
            # others (fp32, here): each kernel is timed for 1.5 s, the fastest call kept.
            mm = 2.0 * n**3 / _timed(lambda am=am: am @ am, device, seconds=1.5)
            cv = conv_flops / _timed(lambda cm=cm, xm=xm: cm(xm), device, seconds=1.5)
            peaks[name] = max(mm, cv) / 1e9
    return peaks


def cpu_flags() -> str:
    """The vector extensions of this CPU that decide its peak (from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), ""
    )
    return f"{model}; " + " ".join(f for f in wanted if f in flags)


def epochs_for(box_s: float, epoch_s: float, runs: float, lo: int, hi: int) -> int:
    """The most epochs (between ``lo`` and ``hi``) whose ``runs`` runs fit ``box_s``, from the
    measured time of one epoch of the slowest run."""
    return max(lo, min(hi, int(box_s / max(epoch_s * runs, 1e-9))))


def probe_epoch(case: Case, method_name: str) -> float:
    """Seconds of one epoch of the reference loop (the slower one) for ``method_name``."""
    student, teacher, method = build(method_name, case.data, *case.models())
    one = replace(case.budget, epochs=1)
    t0 = time.perf_counter()
    reference_fit(student, teacher, method, case.data, one, 1, 0, case.device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument(
        "--minutes", type=float, default=8.5, help="the whole run's time box (default 8.5)"
    )
    ap.add_argument("--cifar-images", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument(
        "--teacher-epochs",
        type=int,
        default=CIFAR_TEACHER.epochs,
        help=f"the CIFAR-shaped teacher's epochs (default {CIFAR_TEACHER.epochs})",
    )
    ap.add_argument("--groups", default="digits,cifar", help="which cases (default both)")
    ap.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"which methods (default {','.join(METHODS)}; at and crd take kd's noise "
        "on the CIFAR-shaped set where kd ran)",
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    box = 60 * args.minutes
    groups = args.groups.split(",")
    methods = args.methods.split(",")
    print(
        f"torch {torch.__version__}, {device}, {args.threads} threads; "
        + (torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_flags())
    )
    peaks = roofline(device)
    print(
        "measured peak: "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
        + "; images/s over training + validation; share of peak = training FLOPs/s over the"
        " peak of the precision the loop computes in"
    )
    summary = []
    if "digits" in groups:
        digits = load_dataset("digits")
        weights, acc = trained_teacher("cnn_wide", digits, Budget(epochs=30), device)
        print(f"digits  teacher cnn_wide: 30 epochs, val acc {100 * acc:.1f}%")
        case = Case(
            "digits",
            digits,
            "cnn_wide",
            "cnn_tiny",
            weights,
            Budget(epochs=1, batch_size=64),
            noise_seeds=(1, 2, 3),
            noise_of={},
            device=device,
        )
        # 4 reference runs, and 16 of kdbench's at about half a reference run's time or less
        epochs = epochs_for(DIGITS_SHARE * box, probe_epoch(case, "crd"), 12, 5, 30)
        case.budget = replace(case.budget, epochs=epochs)
        print(f"digits  cnn_wide→cnn_tiny, {epochs} epochs (time box {DIGITS_SHARE * box:.0f} s)")
        summary.append(("digits", min(run_case(case, peaks, methods))))
    if "cifar" in groups:
        cifar = cifar_shaped(args.cifar_images)
        recipe = replace(CIFAR_TEACHER, epochs=args.teacher_epochs)
        weights, acc = trained_teacher("resnet32x4", cifar, recipe, device)
        print(
            f"cifar   teacher resnet32x4: {recipe.epochs} epochs of Adam, "
            f"val acc {100 * acc:.1f}% ({time.perf_counter() - t0:.0f} s so far)"
        )
        if fast_bf16(device):
            print(f"cifar   {teacher_precision('resnet32x4', weights, cifar, device)}")
        case = Case(
            "cifar",
            cifar,
            "resnet32x4",
            "resnet8x4",
            weights,
            CIFAR_STUDENT,
            noise_seeds=(1, 2),
            noise_of={"at": "kd", "crd": "kd"},
            device=device,
        )
        left = box - (time.perf_counter() - t0)
        # 4 reference runs (scratch's at half kd's time) and 8 of kdbench at about half a
        # reference run's time: 7.5 of kd's reference epochs an epoch; measured, 6 fit.
        epochs = epochs_for(left, probe_epoch(case, "kd"), 6, 1, 6)
        case.budget = replace(case.budget, epochs=epochs)
        print(f"cifar   resnet32x4→resnet8x4, {epochs} epochs (time box {left:.0f} s)")
        summary.append(("cifar", min(run_case(case, peaks, methods))))
    print(f"total {time.perf_counter() - t0:.0f} s")
    for group, ratio in summary:
        print(f"{group} speedup vs reference: {ratio:.2f}x")


if __name__ == "__main__":
    main()
