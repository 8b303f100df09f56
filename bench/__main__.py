"""Benchmarks (not tests): `python -m bench throughput|hires|controlnet|upscale|calibrate`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from bench.throughput import Plan, bench_throughput
from pipeline.errors import UserError
from pipeline.sizes import parse_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    benches = parser.add_subparsers(dest="bench", required=True)
    throughput = benches.add_parser("throughput", help="images/s batched vs one by one")
    throughput.add_argument("--model", default="tiny", help="a MODEL spec (default: tiny)")
    throughput.add_argument("--jobs", type=int, default=16, help="single-image jobs (16)")
    throughput.add_argument("--users", type=int, default=4, help="simulated users (4)")
    throughput.add_argument("--size", default="128x128", help="WxH (128x128)")
    throughput.add_argument("--steps", type=int, default=10, help="sampling steps (10)")
    throughput.add_argument("--max-batch", type=int, default=4, help="batch size cap (4)")
    throughput.add_argument(
        "--compile",
        nargs="?",
        const="auto",
        default="off",
        choices=("auto", "max"),
        help="the compiled path, on any device (max: max-autotune, CUDA graphs, the VAE decoder)",
    )
    throughput.add_argument(
        "--workers",
        type=int,
        help="N local `dreamcord worker` processes through a real redis-server (docs/scale-out.md)",
    )
    throughput.add_argument("--json", action="store_true", help="print one JSON object")
    hires = benches.add_parser("hires", help="highres fix cost relative to the base image")
    hires.add_argument("--model", default="tiny", help="a MODEL spec (default: tiny)")
    hires.add_argument("--size", default="128x128", help="base WxH (128x128)")
    hires.add_argument("--steps", type=int, default=10, help="base steps (10)")
    hires.add_argument("--scale", type=float, default=2.0, help="hires scale (2)")
    hires.add_argument("--hires-steps", type=int, default=10, help="hires steps (10)")
    hires.add_argument("--upscaler", default="Latent", help="upscaler (Latent)")
    hires.add_argument("--repeats", type=int, default=3, help="timed runs of each (3)")
    hires.add_argument("--json", action="store_true", help="print one JSON object")
    control = benches.add_parser("controlnet", help="ControlNet units' cost per step and memory")
    control.add_argument("--model", default="tiny", help="a MODEL spec (default: tiny)")
    control.add_argument("--size", default="256x256", help="WxH (256x256)")
    control.add_argument("--steps", type=int, default=3, help="sampling steps (3)")
    control.add_argument("--units", default="0,1,2", help="unit counts to compare (0,1,2)")
    control.add_argument("--repeats", type=int, default=2, help="timed runs of each (2)")
    control.add_argument(
        "--activations", action="store_true", help="the per-image memory share of one unit"
    )
    control.add_argument("--json", action="store_true", help="print one JSON line")
    upscale = benches.add_parser("upscale", help="tiled 2x and 4x upscales: time, peak memory")
    upscale.add_argument("--model", default="tiny", help="a MODEL spec (default: tiny)")
    upscale.add_argument("--size", type=int, default=256, help="side of the square picture (256)")
    upscale.add_argument("--steps", type=int, default=10, help="steps (10)")
    upscale.add_argument("--strength", type=float, default=0.3, help="denoise (0.3)")
    upscale.add_argument("--tile", type=int, default=512, help="tile side (512)")
    upscale.add_argument("--overlap", type=int, default=64, help="tile overlap (64)")
    upscale.add_argument("--batch", type=int, default=4, help="tiles per UNet call (4)")
    calibrate = benches.add_parser("calibrate", help="the memory model's predictions on a GPU")
    calibrate.add_argument("--model", default="sd15-random", help="a MODEL spec (sd15-random)")
    calibrate.add_argument("--size", default="512x512", help="WxH (512x512)")
    calibrate.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.bench == "calibrate":
        return _calibrate(args, parser)
    if args.bench == "upscale":
        from bench.upscale import UpscalePlan, bench_upscale

        options = (args.size, 2, args.steps, args.strength, args.tile, args.overlap, args.batch)
        print(json.dumps(bench_upscale(UpscalePlan(args.model, *options))))
        return 0
    if args.bench == "hires":
        return _hires(args, parser)
    if args.bench == "controlnet":
        return _controlnet(args, parser)
    try:
        width, height = parse_size(args.size, max_pixels=2048 * 2048)
    except UserError as error:
        parser.error(str(error))
    shape = (width, height, args.steps, args.max_batch)
    plan = Plan(args.model, args.jobs, args.users, *shape, compile=args.compile)
    if args.workers is not None:
        return _remote(plan, args.workers, args.json, parser)
    report = asyncio.run(bench_throughput(plan))
    if args.json:
        print(json.dumps(report))
    else:
        print(_text(report))
    return 0


def _remote(plan: Plan, workers: int, as_json: bool, parser: argparse.ArgumentParser) -> int:
    from bench.remote import bench_remote

    if workers < 1:
        parser.error("--workers takes 1 or more")
    report = asyncio.run(bench_remote(plan, workers))
    if as_json:
        print(json.dumps(report))
    else:
        print(
            f"{workers} worker(s): {report['images_per_s']:.2f} images/s "
            f"({plan.jobs} images in {report['seconds']} s)"
        )
    return 0


def _hires(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bench.hires import HiresPlan, bench_hires

    try:
        width, height = parse_size(args.size, max_pixels=2048 * 2048)
    except UserError as error:
        parser.error(str(error))
    plan = HiresPlan(
        args.model,
        width,
        height,
        args.steps,
        args.scale,
        args.hires_steps,
        args.upscaler,
        args.repeats,
    )
    report = bench_hires(plan)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"base {report['size']}: {report['base_s']} s; with hires ({report['hires']}): "
            f"{report['hires_s']} s; ratio {report['ratio']}x"
        )
    return 0


def _controlnet(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bench.controlnet import ControlPlan, activation_share, bench_controlnet

    try:
        width, height = parse_size(args.size, max_pixels=2048 * 2048)
        units = tuple(int(count) for count in args.units.split(","))
    except (UserError, ValueError) as error:
        parser.error(str(error))
    if args.activations:
        report = activation_share(args.model, width, height)
    else:
        plan = ControlPlan(args.model, width, height, args.steps, units, args.repeats)
        report = bench_controlnet(plan)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def _calibrate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bench.calibrate import bench_calibrate

    try:
        width, height = parse_size(args.size, max_pixels=2048 * 2048)
        report = bench_calibrate(args.model, width, height)
    except UserError as error:
        parser.error(str(error))
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def _text(report: dict) -> str:
    lag = report["loop_lag_ms"]
    waits = ", ".join(f"{user} {s:.2f}s" for user, s in report["wait_s_by_user"].items())
    peak = report["peak_memory_mb"]
    tflops = report["tflop_per_s"]
    return (
        f"batched     {report['batched']['images_per_s']:.2f} images/s\n"
        f"one by one  {report['sequential']['images_per_s']:.2f} images/s\n"
        f"speedup     {report['speedup']:.2f}x\n"
        f"batch       {report['s_per_batch']:.3f} s for {report['settings']['max_batch']} images\n"
        f"lone        {report['lone_request_s']:.3f} s for one image\n"
        f"peak        {'-' if peak is None else f'{peak} MiB'} on the device, "
        f"{report['peak_rss_mb']} MiB RSS\n"
        f"compute     {'-' if tflops is None else f'{tflops} TFLOP/s'} (SD1.5 figure)\n"
        f"compile     {report['compile_s']} s ({report['settings']['compile']})\n"
        f"loop lag    p50 {lag['p50']:.1f} ms, p99 {lag['p99']:.1f} ms, max {lag['max']:.1f} ms\n"
        f"mean wait   {waits}"
    )


if __name__ == "__main__":
    sys.exit(main())
