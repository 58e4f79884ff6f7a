"""Sub-commands of the runtimes part: doctor, drift, bench, deploy. Each is a thin call into egeunet_deploy.runtimes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .args import NO_PROGRESS_HELP, THREADS_MEANING, all_cores, comma_names, path_arg, thread_count, thread_counts

DEVICES = ("auto", "cpu", "cuda", "gpu", "android")
"""``runtimes.base.DEVICES``, mirrored so that ``--help`` does not import the runtimes (checked by a test)."""
HOST_DEVICES = tuple(d for d in DEVICES if d != "android")
VELA_DEVICES = ("ethos-u55-256", "ethos-u65-512", "ethos-u85-256")
"""``egeunet bench --device`` names that compile with Arm's Vela (``runtimes.vela.CONFIGS``, checked by a test)."""
RUNTIME_HELP = ("runner by name instead of the default for each file's kind, e.g. tflm (TensorFlow Lite Micro's "
                "reference kernels, full-integer .tflite only); `egeunet doctor` lists them (default: by suffix)")


def register(sub) -> None:
    """Add the runtime sub-commands to the ``egeunet`` parser."""
    p = sub.add_parser("doctor", help="list every runtime backend and export converter, available or not and why")
    p.set_defaults(handler=cmd_doctor)
    p.add_argument("--json", action="store_true", help="print JSON only (default: readable lines)")

    p = sub.add_parser("drift", help="accuracy drift of exported artifacts vs the PyTorch model (gates CI)")
    p.set_defaults(handler=cmd_drift)
    p.add_argument("--artifacts", type=path_arg, required=True, metavar="DIR_OR_FILE",
                   help="folder of exported artifacts (or one artifact); required")
    p.add_argument("--data", type=path_arg, required=True, metavar="DIR",
                   help="dataset root with ground truth (official, ISIC or flat layout); required")
    p.add_argument("--split", default="test", help="split to run on (default test)")
    p.add_argument("--out", type=path_arg, default=None, metavar="REPORT_DIR",
                   help="where drift.json, report.html and figures go (default: <artifacts>/drift); replaced "
                        "whole, so it must be new, empty or a previous drift report")
    p.add_argument("--tolerance", type=path_arg, default=None, metavar="FILE",
                   help="YAML/JSON tolerances merged over the defaults (default: runtimes/tolerances.yaml alone)")
    p.add_argument("--weights", type=path_arg, default=None, help="reference weights (default: the shipped weights)")
    p.add_argument("--threads", type=thread_count, default=None, metavar="N",
                   help=f"threads per runtime; {THREADS_MEANING} (default: each runtime's own choice)")
    p.add_argument("--device", default="auto", choices=HOST_DEVICES,
                   help="auto: CUDA where a backend has it, else CPU (default auto)")
    p.add_argument("--runtime", default=None, metavar="NAME", help=RUNTIME_HELP)
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="only the first N images, for smoke runs (default: all)")
    p.add_argument("--skip-bad", action="store_true",
                   help="pass over unpaired or unreadable images (listed in the output and the report)")
    p.add_argument("--strict", action="store_true",
                   help="also fail when an artifact had to be skipped (default: skipped rows do not fail)")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)

    p = sub.add_parser("bench", help="latency of artifacts on this host (CPU/CUDA) or on a phone over adb")
    p.set_defaults(handler=cmd_bench)
    p.add_argument("--artifact", type=path_arg, action="append", required=True, metavar="FILE[@RUNTIME]",
                   help="artifact or PyTorch weights; repeat to compare (timed interleaved in one process); "
                        "FILE@RUNTIME times it in that runner (egeunet_fp32.onnx@openvino); required")
    p.add_argument("--device", default="auto", choices=(*DEVICES, *VELA_DEVICES),
                   help="auto: CUDA where present, else CPU, and says which (default auto); "
                        f"{', '.join(VELA_DEVICES)}: Arm's Vela compiles the artifact for that Ethos-U NPU and "
                        "prints its estimate (not a measurement)")
    p.add_argument("--runtime", default=None, metavar="NAME", help=RUNTIME_HELP)
    p.add_argument("--threads", default="1", metavar="N[,N...]",
                   help=f"comma-separated thread counts, e.g. 1,2,4; {THREADS_MEANING} (default 1)")
    p.add_argument("--runs", type=int, default=50, metavar="N", help="timed runs per artifact and thread count "
                                                                     "(default 50)")
    p.add_argument("--warmup", type=int, default=5, metavar="N", help="untimed runs first (default 5)")
    p.add_argument("--e2e-runs", type=int, default=None, metavar="N",
                   help="end-to-end runs: decode + resize + inference + upsample (default: min(runs, 20))")
    p.add_argument("--image", type=path_arg, default=None,
                   help="photo for the end-to-end timing (default: the bundled sample's first test image)")
    p.add_argument("--json", type=path_arg, default=None, metavar="FILE",
                   help="write the results as JSON (default: print only)")
    p.add_argument("--plot", type=path_arg, default=None, metavar="PNG",
                   help="comparison plot (default with several artifacts: beside --json, else ./bench.png)")
    g = p.add_argument_group("android (--device android)")
    g.add_argument("--serial", default=None,
                   help="adb serial when several devices are attached (default: the one attached)")
    g.add_argument("--benchmark-binary", type=path_arg, default=None, metavar="PATH",
                   help="TFLite benchmark_model for the phone's ABI, pushed to /data/local/tmp (default: one "
                        "already there)")
    g.add_argument("--use-gpu", action="store_true", help="benchmark_model --use_gpu=true (default: CPU)")
    g.add_argument("--use-nnapi", action="store_true", help="benchmark_model --use_nnapi=true (default: CPU)")
    g.add_argument("--adb", default=None, help="adb executable (default: $ADB or adb on PATH)")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)

    p = sub.add_parser("deploy", help="calibrate, export every target, drift report, latency: one HTML page")
    p.set_defaults(handler=cmd_deploy)
    p.add_argument("--weights", type=path_arg, default=None,
                   help="weights file (toolkit checkpoint or official state_dict); default: the shipped weights")
    p.add_argument("--data", type=path_arg, default=None, metavar="DIR",
                   help="dataset root with train (calibration) and test (drift) splits; default: the bundled sample")
    p.add_argument("--out", type=path_arg, default=Path("deploy"), metavar="DIR",
                   help="output folder (default ./deploy)")
    p.add_argument("--split", default="test", help="split for the drift report (default test)")
    p.add_argument("--targets", default=None, metavar="T[,T...]",
                   help="comma-separated export targets (default: all this OS supports)")
    p.add_argument("--precisions", default=None, metavar="P[,P...]",
                   help="comma-separated precisions, e.g. fp32,int8 (default: every one each target has)")
    p.add_argument("--threads", default=None, metavar="N[,N...]",
                   help=f"thread counts for the latency bench; {THREADS_MEANING} (default 1,2 as far as this host "
                        f"has cores)")
    p.add_argument("--runs", type=int, default=None, metavar="N",
                   help="timed runs per artifact (default 20 on hosts with 2 cores or fewer, else 50)")
    p.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="untimed runs first (default 3 on hosts with 2 cores or fewer, else 5)")
    p.add_argument("--tolerance", type=path_arg, default=None, metavar="FILE",
                   help="YAML/JSON tolerances merged over the defaults (default: runtimes/tolerances.yaml alone)")
    p.add_argument("--no-blame", action="store_true",
                   help="skip the int8 blame ranking (saves 1-2 minutes per int8 artifact; default: ranked)")
    p.add_argument("--skip-bad", action="store_true",
                   help="pass over unpaired or unreadable images (listed in the output and the report)")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def cmd_doctor(args) -> int:
    from egeunet_deploy.export import export_formats
    from egeunet_deploy.runtimes import doctor

    rows, converters = doctor(), export_formats()
    if args.json:
        print(json.dumps({"runtimes": rows, "converters": converters}, indent=2))
        return 0
    print("runtimes (run artifacts):")
    for r in rows:
        mark = "ok " if r["available"] else "-- "
        print(f"{mark} {r['backend']:12} {r['version'] or 'not installed':14} {', '.join(r['suffixes']):20} "
              f"{'' if r['available'] else r['reason']}")
        for name, acc in r["accelerators"].items():
            state = "present" if acc["present"] else "absent"
            print(f"      {name}: {state} ({acc['detail']})")
    print("converters (egeunet export):")
    for c in converters:
        mark = "ok " if c["available"] else "-- "
        limits = "; ".join(f"{p} needs {why}" for p, why in c["os_only"].items())
        print(f"{mark} {c['target']:12} {','.join(c['precisions']):25} {c['suffix']:12} runs in {c['runner']:12} "
              f"{c['reason'] if not c['available'] else limits}")
    return 0


def cmd_drift(args) -> int:
    from egeunet_deploy.runtimes.drift import run_drift, summary_lines

    out = args.out or (args.artifacts if args.artifacts.is_dir() else args.artifacts.parent) / "drift"
    threads = all_cores() if args.threads == 0 else args.threads
    report = run_drift(args.artifacts, args.data, split=args.split, out=out, tolerance=args.tolerance,
                       weights=args.weights, threads=threads, device=args.device, limit=args.limit,
                       progress=not args.no_progress, skip_bad=args.skip_bad, runtime=args.runtime)
    print("\n".join(summary_lines(report)))
    print(f"report: {out / 'report.html'}  json: {out / 'drift.json'}")
    skipped = report["summary"]["skipped"]
    if not report["passed"]:
        print("drift: FAILED (see the reasons above)", file=sys.stderr)
        return 1
    if skipped and args.strict:
        print(f"drift: {skipped} artifact(s) skipped and --strict is set", file=sys.stderr)
        return 1
    return 0


def cmd_bench(args) -> int:
    from egeunet_deploy.model.checkpoint import atomic_write_bytes
    from egeunet_deploy.runtimes import bench as b
    from egeunet_deploy.runtimes.base import check_output_path

    if args.device in VELA_DEVICES:
        return _bench_vela(args)
    # every check that takes no time, before anything is loaded or measured
    threads = b.parse_threads(args.threads if args.device == "android" else thread_counts(args.threads),
                              args.device)
    b.check_budget(args.runs, args.warmup, args.e2e_runs)
    artifacts = b.check_artifact_paths(args.artifact, args.runtime)
    plot = args.plot or (args.json.with_suffix(".png") if args.json else Path("bench.png"))
    for option, path in (("--json", args.json), ("--plot", plot if len(artifacts) > 1 else None)):
        if path is not None:
            check_output_path(path, option)
    if args.device == "android":
        from egeunet_deploy.runtimes.android import bench_android

        records = bench_android(artifacts, threads=threads, runs=args.runs, warmup=args.warmup,
                                serial=args.serial, benchmark_binary=args.benchmark_binary, use_gpu=args.use_gpu,
                                use_nnapi=args.use_nnapi, adb=args.adb, progress=not args.no_progress)
        phone = records[0]["phone"]
        print(f"phone: {phone['manufacturer']} {phone['model']} ({phone['soc']}, {phone['abi']}, Android "
              f"{phone['android_version']}), serial {phone['serial']}")
    else:
        if args.use_gpu or args.use_nnapi or args.benchmark_binary or args.serial:
            raise ValueError("--serial/--benchmark-binary/--use-gpu/--use-nnapi need --device android")
        for line in b.accelerator_notes(artifacts, verbose=args.verbose, runtime=args.runtime):
            print(line)
        records = b.bench_host(artifacts, threads=threads, runs=args.runs, warmup=args.warmup,
                               device=args.device, e2e_runs=args.e2e_runs, image=args.image,
                               progress=not args.no_progress, runtime=args.runtime)
    b.check_measured(records)
    print("\n".join(b.summary_lines(records)))
    for line in b.ratio_lines(records):
        print(line)
    if args.json:
        payload = records[0] if len(records) == 1 else records
        atomic_write_bytes(args.json, json.dumps(payload, indent=2).encode())
        print(f"json: {args.json}")
    measured = [r for r in records if r["results"]]
    if len(records) > 1 and measured:
        from egeunet_deploy.runtimes.report import bench_figure

        bench_figure(measured, plot)
        print(f"plot: {plot}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


def _bench_vela(args) -> int:
    """``egeunet bench --device ethos-u55-256``: Vela's compile and estimate per artifact, never a timing."""
    from egeunet_deploy.model.checkpoint import atomic_write_bytes
    from egeunet_deploy.runtimes import vela
    from egeunet_deploy.runtimes.base import check_output_path

    if args.runtime or args.serial or args.benchmark_binary or args.use_gpu or args.use_nnapi:
        raise ValueError(f"--device {args.device} compiles with Vela: --runtime, --serial, --benchmark-binary, "
                         f"--use-gpu and --use-nnapi do not apply")
    artifacts = [Path(a) for a in args.artifact]
    for a in artifacts:
        if not a.is_file():
            raise FileNotFoundError(f"artifact not found: {a}")
    if args.json:
        check_output_path(args.json, "--json")
    records = vela.bench_vela(artifacts, args.device)
    if any(r["estimate"] for r in records):  # else the error below says it once
        print("\n".join(vela.summary_lines(records)))
    if args.json:
        payload = records[0] if len(records) == 1 else records
        atomic_write_bytes(args.json, json.dumps(payload, indent=2).encode())
        print(f"json: {args.json}")
    if not any(r["estimate"] for r in records):
        reasons = [r["reason"] for r in records]
        raise ValueError(reasons[0] if len(reasons) == 1 else
                         "no artifact could be compiled:\n  " + "\n  ".join(reasons))
    return 0 if all(r["status"] == "ok" for r in records) else 1


def cmd_deploy(args) -> int:
    from egeunet_deploy.runtimes.bench import parse_threads
    from egeunet_deploy.runtimes.deploy import deploy

    from .console import ExportLog

    log = ExportLog(progress=not args.no_progress)
    result = deploy(weights=args.weights, data=args.data, out=args.out, split=args.split,
                    targets=comma_names(args.targets, "--targets"),
                    precisions=comma_names(args.precisions, "--precisions"),
                    threads=parse_threads(thread_counts(args.threads)) if args.threads is not None else None,
                    runs=args.runs, warmup=args.warmup, tolerance=args.tolerance, progress=not args.no_progress,
                    blame=not args.no_blame, skip_bad=args.skip_bad, log=log)
    return 0 if result["passed"] else 1

