"""The ``kdbench`` command line.

Exit status 0 on success; 2 with a one-line reason on a user's mistake (no traceback).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdbench.errors import KdbenchError

if TYPE_CHECKING:
    import pandas as pd

    from kdbench.plan import Plan
    from kdbench.spec import Suite


def _suite_and_plan(path: str) -> tuple[Suite, Plan]:
    from kdbench.plan import expand
    from kdbench.validation import load_suite

    suite = load_suite(path)
    return suite, expand(suite)


def cmd_run(args: argparse.Namespace) -> int:
    from kdbench import api
    from kdbench.results.remote import is_uri, pulled

    suite = api.load(args.suite)
    results = api.results_location(suite, args.results)
    if args.dry_run:
        from kdbench.plan import expand

        local = pulled(results) if is_uri(str(results)) else Path(results)
        return _dry_run(expand(suite), local, args.retry_failed)
    result = api.run(
        suite,
        results=results,
        address=args.address,
        retry_failed=args.retry_failed,
        mlflow=args.mlflow,
    )
    s = result.summary.iloc[0]
    if s["ran"] == 0:
        print(
            f"nothing to run: all {s['skipped']} trials of '{suite.name}' are finished in "
            f"{results} (use --retry-failed to rerun failed ones)",
            file=sys.stderr,
        )
    else:
        print(
            f"run {result.run_id}: {s['ran']} trials in {s['seconds']:.1f}s "
            f"({s['failed']} failed, {s['skipped']} already finished) -> {results}",
            file=sys.stderr,
        )
    sys.stdout.write(result.markdown())
    return 0


def _dry_run(plan: Plan, results: Path, retry_failed: bool) -> int:
    from kdbench.results import store
    from kdbench.scheduler.driver import tuning_rows
    from kdbench.scheduler.estimate import estimate
    from kdbench.scheduler.work import planned_specs, remaining
    from kdbench.tuning.studies import StudyPeek
    from kdbench.tuning.tuner import Tuner, book_args

    suite = plan.suite
    finished = store.finished_trials(results) if results.is_dir() else {}
    peek = StudyPeek(*book_args(plan, str(results))[:3]) if plan.studies else None
    confirms = tuning_rows(results)[1] if peek and results.is_dir() else {}
    tuner = Tuner(plan, peek, confirm_rows=confirms) if peek else None
    work = remaining(plan, finished, tuner, retry_failed=retry_failed)
    print(f"suite {suite.name} ({suite.source}, sha256 {suite.sha256()[:12]})")
    print(
        f"  {len(suite.datasets)} data sets × {len(suite.pairs)} pairs × {len(suite.methods)} "
        f"methods = {len(plan.cells)} cells; seeds {list(suite.seeds)}"
        + (f"; tuning seeds {_seed_list(suite.tuning_seeds)}" if plan.studies else "")
    )
    for name in suite.datasets:
        print(f"  {name}: {_splits(plan, name)}")
    studies = {s.cell.key: s for s in plan.studies}
    published = _published(plan)
    for cell in plan.cells:
        study = studies.get(cell.key)
        how = (
            f"study {study.name}: {peek.counts(study.name)[0]}/{study.budget} trials done"
            if study and peek
            else "not tuned (defaults + params)"
        )
        print(f"    {cell.key:<48} {how}{published.get(cell.key, '')}")
    counts = plan.counts()
    left = planned_specs(work, tuner)
    confirm = f" + {counts['confirm']} confirm" if "confirm" in counts else ""
    print(
        f"  trials: {counts['teacher']} teacher + {counts['tune']} tune{confirm} + "
        f"{counts['final']} final = {sum(counts.values())}; {len(left)} left to run "
        f"({len(finished)} rows already in {results})"
    )
    est = estimate(plan, left)
    print(
        f"  estimated cost of what is left: {est.images:,} training images, "
        f"{est.macs / 1e12:.2f} TMAC, ≈ {est.cpu_seconds / 3600:.2f} CPU-hours "
        f"(≈ {_duration(est.wall_seconds)} on {est.cpus_available} CPUs; measured step times, "
        f"evaluation {est.eval_seconds / 3600:.2f} CPU-hours of it; pruning and scheduling "
        "not counted)"
    )
    if any(spec.resources.gpus > 0 for spec in left):
        print(_gpu_estimate(left))
    if est.unbudgeted:
        print(
            f"  not estimated: the stages of {est.unbudgeted} trials that have no time bound "
            "(a dataset distillation with time_budget_s: 0)"
        )
    print("dry run: nothing was trained")
    return 0


def _gpu_estimate(specs: list[Any]) -> str:
    """The GPU-hours of trials that ask for GPUs, from the rates benchmarks/gpu_check.py
    measured on a GPU (never from a guess: without them, says so)."""
    from kdbench.scheduler.estimate import DeviceRates, gpu_hours, rates_path

    rates = DeviceRates.load()
    if rates is None:
        return (
            f"  GPU-hours: not estimated: no GPU rates are recorded in {rates_path()} "
            "(benchmarks/gpu_check.py measures and records them on a GPU)"
        )
    hours, k = gpu_hours(specs, rates)
    return (
        f"  ≈ {hours:,.1f} GPU-hours of training on {rates.device}, at the rate "
        f"benchmarks/gpu_check.py measured there with {k} trial{'s' if k > 1 else ''} a GPU "
        f"({rates.gflops[k]:,.0f} GFLOP/s, {rates.measured_at}); evaluation not counted"
    )


def _published(plan: Plan) -> dict[str, str]:
    """Cell key -> "; published 74.92% (source)" for the cells a published number matches."""
    import pandas as pd

    from kdbench.plan import resolve_hparams
    from kdbench.results.leaderboard import with_published
    from kdbench.results.reference import load_reference

    def ipc(cell: Any) -> float:
        value = dict(resolve_hparams(cell.method)).get("ipc")
        return float(value) if isinstance(value, (int, float)) else float("nan")

    cells = pd.DataFrame(
        [
            {
                "key": c.key,
                "dataset": c.dataset,
                "teacher": c.pair.teacher.arch,
                "student": c.pair.student,
                "method": c.method.label,
                "ipc": ipc(c),
            }
            for c in plan.cells
        ]
    )
    matched = with_published(cells, load_reference()).dropna(subset=["published"])
    return {
        r.key: f"; published {100 * r.published:.2f}% ({r.published_source})"
        for r in matched.itertuples()
    }


def _seed_list(seeds: tuple[int, ...]) -> str:
    return str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"


def _splits(plan: Plan, dataset: str) -> str:
    """What each kind of trial trains on, in images, for one data set."""
    from kdbench.data import dataset_info

    d = plan.suite.data
    info = dataset_info(dataset, d.root)
    train, val = info.split_sizes(d.val_fraction)
    finals = f"{train + val:,} (train+val: data.refit)" if d.refits else f"{train:,} (train)"
    tuned = f"tuning trials train on {train:,} and validate on {val:,}; " if plan.studies else ""
    return f"{tuned}teachers and finals train on {finals}; test {info.test:,} images"


def _write_output(out: str, write: Callable[[], object]) -> None:
    """Write ``-o``'s file, or say in one line why it cannot be written there."""
    try:
        write()
    except OSError as exc:
        raise KdbenchError(
            f"-o {out}: cannot write it ({exc.strerror or exc}); give a writable path"
        ) from None


def _os_error(exc: OSError) -> str:
    """One line for a failure of the machine rather than of the input: where, and what to do."""
    where = f"{exc.filename}: " if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        what = (
            "no space left on the device; free some and run the same command again "
            "(finished trials are kept)"
        )
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = (
            f"cannot write there ({exc.strerror}); give a writable results directory "
            "(--results DIR) or output path (-o FILE)"
        )
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        what = f"{exc.strerror}: a file stands where a directory is needed"
    else:
        what = exc.strerror or str(exc)
    return where + what


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _print_leaderboard(rows: pd.DataFrame, fmt: str, out: str | None) -> None:
    from kdbench.results.leaderboard import leaderboard
    from kdbench.results.reference import load_reference
    from kdbench.results.render import render

    text = render(leaderboard(rows, load_reference()), fmt)
    if out:
        _write_output(out, lambda: Path(out).write_text(text))
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from kdbench.results import store

    _print_leaderboard(store.load(args.dir), args.format, args.output)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from kdbench.results import store
    from kdbench.results.remote import is_uri, pulled
    from kdbench.results.report import write_report

    store.load(args.dir)  # a missing or unreadable location is said now, in one line
    local = pulled(args.dir) if is_uri(args.dir) else args.dir
    _write_output(args.output, lambda: write_report(local, args.output))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from kdbench.results import store
    from kdbench.results.files import RunLock
    from kdbench.results.remote import Mirror, is_uri

    if is_uri(args.dir):
        mirror = Mirror(args.dir)
        mirror.local.mkdir(parents=True, exist_ok=True)
        with RunLock(mirror.local):
            mirror.pull()
            folded = store.compact(mirror.local)
            mirror.sync()
    else:
        if not Path(args.dir).is_dir():
            raise KdbenchError(f"{args.dir}: no such results directory")
        with RunLock(args.dir):
            folded = store.compact(args.dir)
    if folded:
        for run_id, n in sorted(folded.items()):
            print(f"{run_id}: {n} rows folded into compacted/")
    else:
        print("nothing to compact: no per-trial files")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from kdbench.results.mlflow import export

    print(export(args.dir, args.mlflow, experiment=args.experiment).line())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.suites:
        try:
            suite, plan = _suite_and_plan(path)
        except KdbenchError as exc:
            print(f"invalid: {exc}", file=sys.stderr)
            failed += 1
            continue
        c = plan.counts()
        print(
            f"ok: {path}: '{suite.name}', {len(plan.cells)} cells, {sum(c.values())} trials "
            f"({c['teacher']} teacher, {c['tune']} tune, {c['final']} final)"
        )
    return 2 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "methods":
        from kdbench.methods import METHODS

        for name, cls in METHODS.items():
            hps = ", ".join(f"{h.name}={h.default}" for h in cls.hparams) or "no hyperparameters"
            print(f"{name:<14} {_first_line(cls.__doc__)}  [{hps}]")
    elif args.what == "suites":
        from kdbench.shipped import SUITES, describe, suite_names

        names = suite_names()
        width = max(map(len, names), default=0)
        for name in names:
            print(f"{name:<{width}}  {describe(name)}")
        print(f"(shipped in {SUITES}; run one by name: kdbench run NAME)", file=sys.stderr)
    elif args.what == "models":
        import torch

        from kdbench.models import MODELS, build_model, count_params

        for name, factory in MODELS.items():
            with torch.device("meta"):  # sizes only: no memory, no initialisation
                model = build_model(name, num_classes=10, input_shape=(3, 32, 32))
            size = count_params(model)
            print(
                f"{name:<14} {size / 1e6:6.3f}M params (10 classes, 3×32×32)  "
                f"{_first_line(factory.__doc__) or ''}"
            )
        for prefix in MODELS.families():
            print(f"{prefix + ':<name>':<14} {_family_line(prefix)}")
    else:
        from kdbench.data import DATASETS, dataset_info

        for name, loader in DATASETS.items():
            try:
                info = dataset_info(name)
            except KdbenchError as exc:  # a folder-based set with no folder: listed, not refused
                print(f"{name:<14} (not found: {exc})")
                continue
            shape = "×".join(map(str, info.input_shape))
            print(
                f"{name:<14} {info.num_classes:>4} classes  {shape:<8} train {info.train:>6,}  "
                f"test {info.test:>6,}  {_first_line(loader.__doc__)}"
            )
    return 0


def _family_line(prefix: str) -> str:
    """What a model family is and whether its library is installed (without importing it)."""
    from importlib import metadata

    try:
        installed = f"{prefix} {metadata.version(prefix)} installed"
    except metadata.PackageNotFoundError:
        installed = f"not installed: pip install 'kdbench[{prefix}]'"
    return f"any {prefix} model, untrained, at the data set's size and classes ({installed})"


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like every user mistake
        self.exit(2, f"{self.prog}: error: {message}\n")


def cmd_submit(args: argparse.Namespace) -> int:
    from kdbench.scheduler import jobs

    job_id = jobs.submit(
        args.suite, address=args.address, results=args.results, retry_failed=args.retry_failed
    )
    print(f"submitted {args.suite} to {args.address}; follow it with:", file=sys.stderr)
    print(f"  kdbench jobs status {job_id} --address {args.address} [--wait]", file=sys.stderr)
    print(job_id)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from kdbench.scheduler import jobs

    if args.action == "status":
        if args.wait:
            state = ""
            for state in jobs.wait(args.job_id, address=args.address):
                print(state, flush=True)
            return 0 if state == "SUCCEEDED" else 1
        print(jobs.status(args.job_id, address=args.address))
    elif args.action == "logs":
        sys.stdout.write(jobs.logs(args.job_id, address=args.address))
    else:
        stopped = jobs.stop(args.job_id, address=args.address)
        print("stopping" if stopped else "not running")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kdbench", description="Compare knowledge-distillation methods fairly.")
    from kdbench import __version__

    p.add_argument("--version", action="version", version=f"kdbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run (or resume) a suite and print its leaderboard")
    r.add_argument("suite", help="a suite file, or a shipped suite's name (kdbench list suites)")
    r.add_argument(
        "--results", metavar="DIR", help="results directory (default results/<suite name>)"
    )
    r.add_argument("--address", help="an existing Ray cluster (default: a private local Ray)")
    r.add_argument(
        "--dry-run", action="store_true", help="print the plan and its cost; train nothing"
    )
    r.add_argument("--retry-failed", action="store_true", help="rerun trials whose row says failed")
    r.add_argument(
        "--mlflow",
        metavar="URI",
        help="log every trial to this MLflow tracking URI as it finishes (pip install "
        "'kdbench[mlflow]')",
    )
    r.set_defaults(func=cmd_run)

    sb = sub.add_parser("submit", help="run a suite on a Ray cluster as a job (Jobs API)")
    sb.add_argument("suite")
    sb.add_argument("--address", required=True, help="the dashboard's URL: http://HEAD:8265")
    sb.add_argument(
        "--results",
        metavar="DIR",
        help="an absolute path on the cluster (default ~/kdbench-results/<suite name>)",
    )
    sb.add_argument(
        "--retry-failed", action="store_true", help="rerun trials whose row says failed"
    )
    sb.set_defaults(func=cmd_submit)

    jb = sub.add_parser("jobs", help="the status, logs of, or stop a submitted job")
    jb.add_argument("action", choices=("status", "logs", "stop"))
    jb.add_argument("job_id")
    jb.add_argument("--address", required=True, help="the dashboard's URL: http://HEAD:8265")
    jb.add_argument(
        "--wait", action="store_true", help="status: print each change until the job ends"
    )
    jb.set_defaults(func=cmd_jobs)

    from kdbench.results.formats import FORMATS

    lb = sub.add_parser("leaderboard", help="the leaderboard tables of a results directory or URI")
    lb.add_argument("dir")
    lb.add_argument("--format", choices=FORMATS, default="markdown")
    lb.add_argument("-o", "--output", metavar="FILE")
    lb.set_defaults(func=cmd_leaderboard)

    rp = sub.add_parser("report", help="a self-contained HTML report with tables and plots")
    rp.add_argument("dir")
    rp.add_argument("-o", "--output", metavar="FILE", default="report.html")
    rp.set_defaults(func=cmd_report)

    cp = sub.add_parser("compact", help="fold per-trial files into one file per run")
    cp.add_argument("dir")
    cp.set_defaults(func=cmd_compact)

    ex = sub.add_parser("export", help="export result rows and curves to an MLflow tracking store")
    ex.add_argument("dir", help="a results directory or URI")
    ex.add_argument(
        "--mlflow",
        metavar="URI",
        required=True,
        help="the tracking URI: http://HOST:5000, sqlite:///mlflow.db, ...",
    )
    ex.add_argument("--experiment", metavar="NAME", help="default kdbench/<suite name>")
    ex.set_defaults(func=cmd_export)

    v = sub.add_parser("validate", help="check suites without running them")
    v.add_argument("suites", nargs="+")
    v.set_defaults(func=cmd_validate)

    ls = sub.add_parser("list", help="what the registries hold")
    ls.add_argument("what", choices=("suites", "methods", "models", "datasets"))
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from kdbench.signals import end_on_sigterm, terminated

    args = build_parser().parse_args(argv)
    end_on_sigterm()
    try:
        return args.func(args)
    except KdbenchError as exc:
        print(f"kdbench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `kdbench list models | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # the disk, the file system, a permission: not a bug of kdbench
        print(f"kdbench: error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        how = "terminated" if terminated() else "interrupted"
        print(
            f"kdbench: {how}; finished trials are kept, run the same command to resume",
            file=sys.stderr,
        )
        return 143 if terminated() else 130


if __name__ == "__main__":
    sys.exit(main())
