"""`dreamcord train`: train a LoRA from a folder or zip of pictures and add it to the library.

The plan is printed before anything heavy runs; a taken name or a bad data set is refused first.
The run lives in `DATA_DIR/training/<name>/` (the extracted pictures and checkpoints), so the
same command run again resumes from the last checkpoint. Once the kohya file is in the LoRA
library (the same path as `dreamcord lora add`), that folder is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli.lora import CLI
from bot.cli.progress import ProgressBar
from bot.libraries import size_text
from bot.settings import Settings
from data.registry import name_key
from pipeline.errors import UserError
from pipeline.prompt.limits import PromptLimits
from pipeline.training.dataset import open_dataset
from pipeline.training.plan import OPTIMIZERS, PRESETS, TrainingOptions, TrainingPlan, plan_training

if TYPE_CHECKING:
    from bot.libraries import AuditedLibrary

TRAINING_FOLDER = "training"
DATASET_FOLDER = "dataset"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a LoRA from a folder or .zip of pictures and add it to the LoRA library",
        description="Train a LoRA (kohya format) on the model, then add it to the LoRA library. "
        "Captions come from NAME.txt beside each picture, else the trigger word; a folder "
        "named 10_fox repeats its pictures 10 times per epoch. Run the same command again to "
        "resume an interrupted run.",
    )
    parser.add_argument("dataset", type=Path, metavar="DATASET_DIR_OR_ZIP")
    parser.add_argument("--name", required=True, help="the LoRA's name in prompts")
    parser.add_argument("--model", help="the base model (default: MODEL)")
    parser.add_argument(
        "--preset", choices=tuple(PRESETS), help="character (default), style, concept"
    )
    parser.add_argument("--trigger", help="the word that calls the LoRA (default: the name)")
    parser.add_argument("--steps", type=int, help="total steps (default: from the preset)")
    parser.add_argument("--rank", type=int, help="network dim (preset: 32-64)")
    parser.add_argument("--alpha", type=float, help="network alpha (preset: rank / 2)")
    parser.add_argument("--lr", type=float, help="UNet learning rate (1e-4; Prodigy 1)")
    parser.add_argument("--te-lr", type=float, help="text-encoder learning rate (5e-5; 0: frozen)")
    parser.add_argument("--batch", type=int, help="pictures per step (1)")
    parser.add_argument("--resolution", type=int, help="training size, 256-1024 (512)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help="adamw (default) or prodigy")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (100)")
    parser.add_argument("--seed", type=int, help="seed of the run (0)")
    parser.add_argument("--weight", type=float, help="the LoRA's default weight in prompts (1)")
    parser.add_argument("--json", action="store_true", help="print one JSON document at the end")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, settings: Settings) -> int:
    options = TrainingOptions.for_preset(
        args.name,
        args.preset or "character",
        trigger=args.trigger,
        steps=args.steps,
        rank=args.rank,
        alpha=args.alpha,
        lr=args.lr,
        te_lr=args.te_lr,
        batch=args.batch,
        resolution=args.resolution,
        optimizer=args.optimizer,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )
    limits = PromptLimits()
    if args.weight is not None and not limits.lora_weight_allowed(args.weight):
        raise UserError(
            f"--weight {args.weight:g} is out of range: use {limits.lora_weight_range}, "
            "usually 0.5-1"
        )
    asyncio.run(_with_loras(settings, _refuse_taken, options.name))
    work_dir = settings.data_dir / TRAINING_FOLDER / options.name
    plan = _prepare(args.dataset, options, work_dir)
    if not args.json:
        print(plan.describe(), flush=True)
    outcome = _train(plan, settings, args.model, work_dir, quiet=args.json)
    entry = asyncio.run(_with_loras(settings, _register, outcome["file"], options, args.weight))
    shutil.rmtree(work_dir, ignore_errors=True)
    report = {
        "name": entry.name,
        "triggers": list(entry.triggers),
        "default_weight": entry.default_weight,
        "size_bytes": entry.size_bytes,
        "sha256": entry.sha256,
        "steps": plan.total_steps,
        "epochs": plan.epochs,
        "images": len(plan.images),
        "resumed_from": outcome["resumed_from"],
        "final_loss": outcome["loss"],
        "steps_per_second": outcome["steps_per_second"],
        "options": plan.options.to_json(),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"added LoRA {entry.name!r} ({size_text(entry.size_bytes)}): use <lora:{entry.name}:1>"
        )
    return 0


def _prepare(source: Path, options: TrainingOptions, work_dir: Path) -> TrainingPlan:
    """The checked data set and its plan; a refusal leaves no new folder behind."""
    fresh = not work_dir.exists()
    try:
        into = work_dir / DATASET_FOLDER
        if source.is_file():
            shutil.rmtree(into, ignore_errors=True)  # a resumed run extracts again
        return plan_training(open_dataset(source, into), options)
    except BaseException:
        if fresh:
            shutil.rmtree(work_dir, ignore_errors=True)
        raise


def _train(
    plan: TrainingPlan, settings: Settings, model: str | None, work_dir: Path, quiet: bool
) -> dict[str, Any]:
    """Load the model, train (resuming when a checkpoint of this plan exists), export."""
    from bot.models import model_sources
    from pipeline.models import choose_placement, load_model
    from pipeline.training.trainer import Trainer, TrainingComponents

    sources, default = model_sources(settings, model)
    # Training keeps its parts on the device: offloading would copy them every step.
    placement = choose_placement(settings.device, settings.dtype, "high", settings.attention)
    loaded = load_model(sources[default], placement, settings.vae)
    components = TrainingComponents.from_pipe(loaded.pipe, loaded.name)
    trainer = Trainer.start(components, plan, work_dir, placement.device, placement.dtype)
    resumed_from = trainer.step_count
    if resumed_from and not quiet:
        print(f"resuming from the checkpoint at step {resumed_from}", flush=True)
    loss, started = float("nan"), time.perf_counter()
    with ProgressBar("training") as bar:
        while not trainer.finished:
            report = trainer.step()
            loss = report.loss
            bar.update(report.step, report.total, note=f"loss {loss:.4f}")
    elapsed = time.perf_counter() - started
    done = plan.total_steps - resumed_from
    file = trainer.export(work_dir / f"{plan.options.name}.safetensors")
    trainer.close()
    return {
        "file": file,
        "resumed_from": resumed_from,
        "loss": loss,
        "steps_per_second": done / elapsed if elapsed > 0 and done else None,
    }


async def _with_loras(settings: Settings, verb: Any, *args: Any) -> Any:
    from bot.container import open_library_verbs

    db, libraries = await open_library_verbs(settings)
    try:
        return await verb(libraries.of("lora"), *args)
    finally:
        await db.close()


async def _refuse_taken(library: AuditedLibrary, name: str) -> None:
    """Refuse a name the library has before any picture is read or step is run."""
    name_key(name, library.kind.what)  # a name the registry would refuse at the end
    taken = {known.lower() for known in await library.names(enabled_only=False)}
    if name.lower() in taken:
        raise UserError(
            f"there is already a LoRA named {name!r}: pick another --name, or remove it first "
            f"(dreamcord lora remove {name})"
        )


async def _register(
    library: AuditedLibrary, file: Path, options: TrainingOptions, weight: float | None
) -> Any:
    return await library.add_file(
        file, CLI, name=options.name, weight=weight, triggers=(options.trigger,)
    )
