"""The GPU check: kdbench's CUDA path run for real, its speed, and the RepDistiller table's cost.

One command, at most 8 minutes on one GPU:

    python benchmarks/gpu_check.py                 # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --device cpu    # the same code paths on the CPU, tiny sizes

1. **Checks** (each prints ``ok`` or ``FAILED`` and what it saw):
   - bf16 autocast and channels_last: ``budget.precision: auto`` resolves to both for
     resnet8x4 on this device, and a kd trial (resnet32x4 → resnet8x4) trains in them, eager
     and with ``budget.compile``, its loss finite and its weights channels_last;
   - a crd trial with a CIFAR-100-sized memory bank (50,000 samples × 128, 100 classes,
     16,384 negatives) on the device: its banks live there, its loss is finite;
   - the memory share: a process held to a quarter of the GPU (what a ``gpus_per_trial:
     0.25`` trial does) cannot allocate a third of it;
   - four quarter-GPU trials packed on one device through the real driver on a local Ray:
     they overlap in time, and each one's peak memory stays within its share.
2. **trial_speed on the device**: ``trial_speed.py``'s CIFAR-shaped cases (scratch, kd, at,
   crd, resnet32x4 → resnet8x4) against the reference loop (target: at least 3× on a GPU).
3. **ImageNet-shaped**: ResNet-34 → ResNet-18 kd at 224 × 224 from a streamed folder of
   generated ImageNet-sized JPEGs (500 × 375) through the one trainer (``budget.precision:
   auto``: bf16 and channels_last on a GPU), the loader using every CPU: images/s per GPU,
   the decoder's own rate on the GPU (nvJPEG through TorchCodec) and on the CPU, and
   ``imagenet_mdistiller``'s GPU-hours at the measured rate (its training FLOPs, at one trial
   a GPU).
4. **Packing**: real trials (scratch, kd and crd of resnet32x4 → resnet8x4 on CIFAR-shaped
   images) through the driver at 1, 2, 4 and 8 trials a GPU (``gpus_per_trial`` 1, 0.5,
   0.25, 0.125): images/s per GPU, GPU memory per trial, and the training FLOPs a second per
   GPU, which are recorded (``kdbench.scheduler.estimate.rates_path()``) for ``kdbench run
   --dry-run`` to estimate any suite's GPU-hours from. Then the whole RepDistiller table
   (``cifar100_repdistiller``: 6 teachers and 570 students of 240 epochs) extrapolated at
   each packing, from its training FLOPs.

With ``--device cpu`` the data, epochs and packings shrink so that the whole runs in about
a minute on two cores, the Ray cluster gets a logical GPU (trials then run on the CPU), and
the figures are printed but not recorded as a GPU's. Last line: ``gpu check: N ok, M failed``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import cifar_shaped  # noqa: E402
import torch  # noqa: E402
import trial_speed  # noqa: E402

from kdbench.methods import MethodContext, Step, method_class  # noqa: E402
from kdbench.models import build_model  # noqa: E402
from kdbench.models.base import count_macs  # noqa: E402
from kdbench.scheduler.estimate import (  # noqa: E402
    DeviceRates,
    arch_macs,
    image_flops,
    training_flops,
)
from kdbench.spec import Budget  # noqa: E402
from kdbench.training.loop import fit  # noqa: E402
from kdbench.training.trainer import Precision, as_fp32  # noqa: E402

TEACHER, STUDENT = "resnet32x4", "resnet8x4"


class Report:
    def __init__(self) -> None:
        self.ok = self.failed = 0

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.ok += passed
        self.failed += not passed
        print(f"{'ok    ' if passed else 'FAILED'} {name}: {detail}", flush=True)


def sizes(device: torch.device) -> dict:
    if device.type == "cuda":
        return {
            "images": 20_000,
            "epochs": 2,
            "packings": (1, 2, 4, 8),
            "bank": 50_000,
            "nce_k": 16_384,
            "batch": 64,
            "speed_images": 8192,
            "speed_minutes": 3.0,
            "speed_teacher_epochs": trial_speed.CIFAR_TEACHER.epochs,
            "eval": f"{cifar_shaped.VAL},{cifar_shaped.TEST}",
            "imagenet_images": 2048,
            "imagenet_epochs": 2,
            "imagenet_batch": 256,
        }
    return {
        "images": 96,
        "epochs": 1,
        "packings": (1, 2),
        "bank": 50_000,
        "nce_k": 16_384,
        "batch": 8,
        "speed_images": 64,
        "speed_minutes": 0.3,
        "speed_teacher_epochs": 1,
        "eval": "32,32",
        "imagenet_images": 24,
        "imagenet_epochs": 1,
        "imagenet_batch": 8,
    }


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def check_precision(report: Report, device: torch.device, size: dict) -> None:
    data = cifar_shaped.cifar_shaped(4 * size["batch"])
    # Compilation on a CPU goes through Inductor's C++ code, not the GPU's Triton kernels, and
    # costs half a minute cold: the CPU run checks the eager path (tests/test_compile.py the rest).
    for mode in ("none", "default") if device.type == "cuda" else ("none",):
        torch.manual_seed(0)
        teacher = build_model(TEACHER, num_classes=10, input_shape=data.input_shape).to(device)
        teacher.eval().requires_grad_(False)
        student = build_model(STUDENT, num_classes=10, input_shape=data.input_shape).to(device)
        precision = Precision.resolve(
            "auto", count_macs(student, data.input_shape), device, student
        )
        cls = method_class("kd")
        method = cls(cls.defaults(), MethodContext.for_data(student, teacher, data, device))
        budget = Budget(epochs=1, batch_size=size["batch"], compile=mode)
        t0 = time.perf_counter()
        result = fit(
            student,
            data,
            method=method,
            budget=budget,
            epochs=1,
            seed=0,
            augment=True,
            teacher=teacher,
            device=device,
        )
        seconds = time.perf_counter() - t0
        conv = next(m for m in student.modules() if isinstance(m, torch.nn.Conv2d))
        layout = conv.weight.is_contiguous(memory_format=torch.channels_last)
        want_bf16 = device.type == "cuda" or precision.bf16  # a CPU: where it has fast bf16
        report.check(
            f"kd trial {TEACHER}→{STUDENT}, compile {mode}",
            math.isfinite(result.curve[-1].train_loss)
            and precision.channels_last
            and layout
            and precision.bf16 == want_bf16,
            f"precision auto → bf16 {precision.bf16}, channels_last {precision.channels_last}; "
            f"weights channels_last {layout}; loss {result.curve[-1].train_loss:.3f}; "
            f"{seconds:.1f} s for {result.images_seen} images (compilation included)",
        )


def check_crd_bank(report: Report, device: torch.device, size: dict) -> None:
    n, classes = size["bank"], 100
    shape = (3, 32, 32)
    torch.manual_seed(0)
    teacher = build_model(TEACHER, num_classes=classes, input_shape=shape).to(device).eval()
    teacher.requires_grad_(False)
    student = build_model(STUDENT, num_classes=classes, input_shape=shape).to(device)
    labels = torch.arange(n) % classes
    ctx = MethodContext(
        student=student,
        teacher=teacher,
        num_classes=classes,
        n_train=n,
        input_shape=shape,
        device=device,
        train_labels=labels,
    )
    cls = method_class("crd")
    method = cls({**cls.defaults(), "nce_k": size["nce_k"]}, ctx).to(device)
    bank = [t for t in method.buffers() if t.dim() == 3 and t.shape[1] == n]  # student, teacher
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    opt = torch.optim.SGD(list(student.parameters()) + list(method.parameters()), lr=0.01)
    precision = Precision.resolve("auto", count_macs(student, shape), device, student)
    losses = []
    for _ in range(3):
        idx = torch.randint(0, n, (size["batch"],), device=device)
        x = torch.randn(size["batch"], *shape, device=device)
        with torch.no_grad(), precision.autocast(device):
            t_out = as_fp32(teacher.forward_features(x))
        with precision.autocast(device):
            s_out = as_fp32(student.forward_features(x))
        terms = method.loss(
            Step(
                x=x,
                y=labels.to(device)[idx],
                student=s_out,
                teacher=t_out,
                index=idx,
                epoch=0,
                epochs=1,
            )
        )
        loss = torch.stack(list(terms.values())).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    bank_bytes = sum(t.numel() * t.element_size() for t in bank)
    peak = torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else 0
    report.check(
        "crd with a CIFAR-100-sized bank",
        bool(bank)
        and all(t.device.type == device.type for t in bank)
        and all(math.isfinite(v) for v in losses),
        f"banks of {n:,} × {bank[0].shape[2] if bank else 0} ({bank[0].shape[0] if bank else 0}: "
        f"student, teacher) on {device.type} "
        f"({mib(bank_bytes)}), {size['nce_k']:,} negatives, losses "
        + ", ".join(f"{v:.2f}" for v in losses)
        + (f"; {mib(peak)} allocated at the peak" if device.type == "cuda" else ""),
    )


SHARE_PROBE = """
import torch
torch.cuda.set_per_process_memory_fraction(0.25, 0)
total = torch.cuda.get_device_properties(0).total_memory
try:
    torch.empty(int(total / 3), dtype=torch.uint8, device="cuda")
    print("allocated")
except torch.OutOfMemoryError:
    print("refused")
"""


def check_memory_share(report: Report, device: torch.device) -> None:
    if device.type != "cuda":
        print("skip   memory share: no GPU memory to share on the CPU")
        return
    out = subprocess.run([sys.executable, "-c", SHARE_PROBE], capture_output=True, text=True)
    said = out.stdout.strip().splitlines()[-1:] or [out.stderr.strip()[-200:]]
    report.check(
        "memory share",
        said == ["refused"],
        f"a process held to 0.25 of the GPU asking for a third of it: {said[0]}",
    )


def start_ray(device: torch.device, size: dict) -> None:
    import ray

    env = {
        "KDBENCH_CIFAR_SHAPED_IMAGES": str(size["images"]),
        "KDBENCH_CIFAR_SHAPED_EVAL": size["eval"],
    }
    os.environ.update(env)
    cifar_shaped.register()
    ray.init(
        address="local",
        num_cpus=os.cpu_count() or 2,
        num_gpus=1,  # on a CPU-only machine a logical GPU: the packing, not the device, is run
        include_dashboard=False,
        logging_level="WARNING",
        object_store_memory=2**30,  # the data (20,000 images: 60 MB) and weights travel through it
        runtime_env={
            "py_modules": [str(HERE / "cifar_shaped.py")],
            "worker_process_setup_hook": "cifar_shaped.register",
            "env_vars": env,
        },
    )


def packed_run(k: int, checkpoint: Path, size: dict, results: Path, cpus: int):
    """Scratch, kd and crd with ``k`` seeds each at ``1/k`` GPU a trial: at least ``k`` trials
    run at once. Returns the student rows."""
    import kdbench
    from kdbench.results import load

    suite = {
        "name": f"gpu_check_{k}",
        "datasets": ["cifar_shaped"],
        "pairs": [
            {"teacher": {"arch": TEACHER, "checkpoint": str(checkpoint)}, "student": STUDENT}
        ],
        "methods": ["kd", "crd"],
        "seeds": list(range(k)),
        "budget": {"epochs": size["epochs"], "batch_size": 64, "lr": 0.05},
        "tuning": {"trials": 0},
        "data": {"val_fraction": 0.1},
        "resources": {
            "cpus_per_trial": cpus,
            "gpus_per_trial": 1 / k,
            "teacher": {"cpus": cpus, "gpus": 1 / k},
        },
    }
    kdbench.run(suite, results=results, progress=False)
    rows = load(results)
    return rows[rows["phase"] == "final"]


def overlap(rows) -> int:
    """The most trials that ran at the same moment."""
    events = sorted(
        [(t, 1) for t in rows["started_at"]] + [(t, -1) for t in rows["finished_at"]],
        key=lambda e: (e[0], e[1]),
    )
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def packing(report: Report, device: torch.device, size: dict, workdir: Path) -> dict[int, float]:
    """Real trials packed k to a GPU; returns training GFLOP/s per GPU at each k."""
    import ray

    data = cifar_shaped.cifar_shaped(size["images"], *map(int, size["eval"].split(",")))
    weights, acc = trial_speed.trained_teacher(
        TEACHER, data, Budget(epochs=1, optimizer="adam", lr=1e-3), device
    )
    checkpoint = workdir / "teacher.pt"
    torch.save(weights, checkpoint)
    print(
        f"packing: teacher {TEACHER} trained 1 epoch on {size['images']:,} images "
        f"(val {100 * acc:.1f}%)"
    )
    cpus = max(1, (os.cpu_count() or 2) // max(size["packings"]))
    start_ray(device, size)
    total_mem = (
        torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 0
    )
    rates: dict[int, float] = {}
    try:
        for k in size["packings"]:
            rows = packed_run(k, checkpoint, size, workdir / f"k{k}", cpus)
            ok = rows[rows["status"] == "ok"]
            start = ok["started_at"].map(datetime.datetime.fromisoformat).min()
            end = ok["finished_at"].map(datetime.datetime.fromisoformat).max()
            wall = (end - start).total_seconds()
            flops = _rows_flops(ok, data)
            rates[k] = flops / wall / 1e9
            per_gpu = ok["images_seen"].sum() / wall
            print(
                f"packing {k} a GPU: {len(ok)}/{len(rows)} trials ok, at most {overlap(ok)} at once,"
                f" {per_gpu:,.0f} images/s per GPU, {rates[k]:,.0f} GFLOP/s of training; "
                f"memory per trial {ok['peak_mem_mb'].median():,.0f} MiB (median), "
                f"{ok['peak_mem_mb'].max():,.0f} MiB (max)"
            )
            if k == 4 or (device.type != "cuda" and k == max(size["packings"])):
                share = total_mem / k / 2**20
                report.check(
                    f"{k} trials packed on one {'GPU' if device.type == 'cuda' else 'logical GPU'}",
                    len(ok) == len(rows)
                    and overlap(ok) >= k
                    and (device.type != "cuda" or ok["peak_mem_mb"].max() <= share),
                    f"{overlap(ok)} ran at once; peak memory {ok['peak_mem_mb'].max():,.0f} MiB"
                    + (f" within the share of {share:,.0f} MiB" if device.type == "cuda" else ""),
                )
    finally:
        ray.shutdown()
    return rates


def check_imagenet(report: Report, device: torch.device, size: dict, workdir: Path) -> float:
    """ResNet-34 → ResNet-18 at 224 from a streamed folder; returns the training GFLOP/s."""
    from input_pipeline import write_images

    from kdbench.data.imagenet import IMAGENET_RECIPE
    from kdbench.data.stream import IMAGENET_MEAN, IMAGENET_STD, decode
    from kdbench.data.streamed import StreamedImages
    from kdbench.training.trainer import loader_workers

    n, classes = size["imagenet_images"], 10
    jpegs = write_images(workdir, n, (500, 375), classes=classes)  # in workdir/folders/
    data = StreamedImages(
        "imagenet_shaped",
        folder="folders",
        recipe=IMAGENET_RECIPE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )(root=workdir, val_fraction=0.05)
    t0 = time.perf_counter()
    for j in jpegs:
        decode(j, 3)
    cpu_rate = len(jpegs) / (time.perf_counter() - t0)
    gpu_rate = float("nan")
    if device.type == "cuda":
        from torchcodec.decoders import decode_jpeg

        decode_jpeg(jpegs[:8], device=device)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(jpegs), 64):
            decode_jpeg(jpegs[i : i + 64], device=device)
        torch.cuda.synchronize()
        gpu_rate = len(jpegs) / (time.perf_counter() - t0)
    torch.set_num_threads(min(os.cpu_count() or 2, 16))
    torch.manual_seed(0)
    shape = data.input_shape
    teacher = build_model("resnet34", num_classes=classes, input_shape=shape).to(device)
    teacher.eval().requires_grad_(False)
    student = build_model("resnet18", num_classes=classes, input_shape=shape).to(device)
    cls = method_class("kd")
    method = cls(cls.defaults(), MethodContext.for_data(student, teacher, data, device))
    budget = Budget(epochs=size["imagenet_epochs"], batch_size=size["imagenet_batch"])
    result = fit(
        student,
        data,
        method=method.to(device),
        budget=budget,
        epochs=size["imagenet_epochs"],
        seed=0,
        augment=True,
        teacher=teacher,
        device=device,
    )
    # The last epoch: the first one pays for cuDNN's autotuning and the loader's warm-up.
    last = result.curve[-1]
    rate = result.images_seen / len(result.curve) / last.seconds
    flops = image_flops(arch_macs("resnet18", 1000, shape), arch_macs("resnet34", 1000, shape))
    gflops = rate * flops / 1e9
    report.check(
        "imagenet-shaped kd resnet34→resnet18 at 224, streamed",
        math.isfinite(last.train_loss) and result.skipped == 0,
        f"{rate:,.0f} images/s ({gflops:,.0f} training GFLOP/s) with {loader_workers()} loader "
        f"processes; decoder {cpu_rate:,.0f} img/s on one CPU core, "
        + (f"{gpu_rate:,.0f} img/s nvJPEG" if device.type == "cuda" else "no GPU decoder here"),
    )
    return gflops


def imagenet_table(gflops: float) -> None:
    """``imagenet_mdistiller``'s GPU-hours at the measured ImageNet-shaped rate."""
    from kdbench.plan import expand
    from kdbench.shipped import suite_file
    from kdbench.validation import load_suite

    plan = expand(load_suite(suite_file("imagenet_mdistiller")))
    flops = training_flops(list(plan.trials))
    print(
        f"imagenet_mdistiller: {len(plan.trials)} trials, {flops / 1e18:,.1f} EFLOP of training; "
        f"at {gflops:,.0f} GFLOP/s a device: {flops / (gflops * 1e9) / 3600:,.1f} device-hours"
    )


def _rows_flops(rows, data) -> float:
    """Training FLOPs of finished rows: images seen × ``estimate.image_flops`` of the pair."""
    shape = data.input_shape
    s, t = arch_macs(STUDENT, 10, shape), arch_macs(TEACHER, 10, shape)
    return sum(
        images * image_flops(s, t if method_class(method).needs.teacher else 0)
        for method, images in zip(rows["method"], rows["images_seen"], strict=True)
    )


def table(rates: dict[int, float]) -> None:
    """The RepDistiller table's GPU-hours at each measured packing."""
    from kdbench.plan import expand
    from kdbench.shipped import suite_file
    from kdbench.validation import load_suite

    plan = expand(load_suite(suite_file("cifar100_repdistiller")))
    flops = training_flops(list(plan.trials))
    print(
        f"cifar100_repdistiller: {len(plan.trials)} trials, {flops / 1e18:,.1f} EFLOP of training "
        "(240 epochs each; evaluation not counted)"
    )
    for k, gflops in rates.items():
        print(
            f"  at {k} trial{'s' if k > 1 else ''} a GPU: {flops / (gflops * 1e9) / 3600:,.1f} GPU-hours"
        )


def section(name: str, t0: float) -> None:
    print(f"-- {name} ({time.perf_counter() - t0:.0f} s so far)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-speed", action="store_true", help="skip trial_speed's cases")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; --device cpu runs the same code paths")
    size = sizes(device)
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu check on {name}, torch {torch.__version__}", flush=True)
    report = Report()
    section("checks", t0)
    check_precision(report, device, size)
    check_crd_bank(report, device, size)
    check_memory_share(report, device)
    if not args.skip_speed:
        section("trial_speed", t0)
        speed = subprocess.run(
            [
                sys.executable,
                str(HERE / "trial_speed.py"),
                "--device",
                args.device,
                "--groups",
                "cifar",
                "--cifar-images",
                str(size["speed_images"]),
                "--minutes",
                str(size["speed_minutes"]),
                "--teacher-epochs",
                str(size["speed_teacher_epochs"]),
                "--threads",
                str(min(os.cpu_count() or 2, 8)),
            ],
            text=True,
            capture_output=True,
        )
        print(speed.stdout, end="")
        report.check(
            "trial_speed",
            speed.returncode == 0,
            speed.stdout.strip().splitlines()[-1]
            if speed.returncode == 0
            else speed.stderr.strip()[-300:],
        )
    section("imagenet-shaped", t0)
    with tempfile.TemporaryDirectory() as tmp:
        imagenet_table(check_imagenet(report, device, size, Path(tmp)))
    section("packing", t0)
    with tempfile.TemporaryDirectory() as tmp:
        rates = packing(report, device, size, Path(tmp))
    table(rates)
    if device.type == "cuda":
        path = DeviceRates(name, datetime.date.today().isoformat(), rates).save()
        print(f"rates recorded in {path} (kdbench run --dry-run reads them)")
    print(f"{time.perf_counter() - t0:.0f} s")
    print(f"gpu check: {report.ok} ok, {report.failed} failed")
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()
