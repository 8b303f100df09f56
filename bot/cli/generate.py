"""`dreamcord generate`: make images from the command line through the bot's own service.

The job takes the same path as a Discord job (service, queue, planner, worker, engine, SQLite),
only the presenter differs: a progress bar, then the PNGs copied into `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL.Image import Resampling

from bot import followups
from bot.cli import controls, edits, image_prompts
from bot.cli.progress import ProgressBar
from bot.container import open_database, open_services, read_controlnets, read_libraries
from bot.controls import ControlAsk, tile_model
from bot.jobs import Origin
from bot.models import limits_of
from bot.recipes import RecipeReader
from bot.requests import build_request
from bot.settings import Settings
from pipeline.control.annotators import ANNOTATORS_FOLDER, Annotators
from pipeline.errors import UserError
from pipeline.limits import check_request, find_rng, parse_ensd
from pipeline.png import read_png
from pipeline.recipe import Recipe
from pipeline.request import GenerationRequest, Mode, TileSpec
from pipeline.samplers import SAMPLER_NAMES, SCHEDULE_NAMES
from pipeline.sizes import fit_size, parse_size
from pipeline.upscalers import UPSCALER_NAMES

if TYPE_CHECKING:
    from PIL.Image import Image

    from data.generations import Generation
    from data.jobs import Job as StoredJob
    from pipeline.lora.source import FileSource

CLI_USER_ID = 0
"""Jobs from the command line are stored under this user id."""
DEFAULT_IMG2IMG_STRENGTH = 0.6
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="make images from a prompt and write them as PNG files",
        description="Make images with the same engine as the bot. Defaults come from .env.",
    )
    parser.add_argument("prompt", nargs="?", help="the prompt, in the A1111 prompt language")
    parser.add_argument("--negative", help="the negative prompt (default: DEFAULT_NEGATIVE)")
    parser.add_argument("--size", help="WxH such as 512x768, or an aspect ratio such as 2:3")
    parser.add_argument(
        "--count", type=int, help="how many images (image i uses seed + i; default 1, --vary 4)"
    )
    parser.add_argument("--seed", type=int, help="seed of the first image (default: random)")
    parser.add_argument("--steps", type=int, help="sampling steps")
    parser.add_argument("--cfg", type=float, help="CFG scale: how closely to follow the prompt")
    parser.add_argument("--sampler", help=f"one of: {', '.join(SAMPLER_NAMES)}")
    parser.add_argument(
        "--schedule",
        help=f"schedule type, one of: {', '.join(SCHEDULE_NAMES)} (Automatic: the sampler's own)",
    )
    parser.add_argument("--clip-skip", type=int, help="1 (default) or 2 for anime models")
    parser.add_argument(
        "--rng",
        help="where the noise comes from, as A1111's RNG: cpu (default: RNG in .env), gpu "
        "(A1111's default: NVIDIA's numbers, on any machine) or nv",
    )
    parser.add_argument(
        "--ensd", help="A1111's eta noise seed delta (ENSD), such as 31337; changes Euler a, DPM2 a"
    )
    parser.add_argument("--model", help="tiny, a .safetensors file, a diffusers folder or hub id")
    parser.add_argument(
        "--fast",
        action="store_true",
        default=None,
        help="a quicker draft: token merging (tomesd 0.5), labelled in the parameters",
    )
    hires = parser.add_argument_group("highres fix")
    hires.add_argument("--hires", action="store_true", default=None, help="refine at a larger size")
    hires.add_argument("--hires-scale", type=float, help="1 to 2 (default 2); implies --hires")
    hires.add_argument("--hires-steps", type=int, help="default 15; 0 = same as --steps")
    hires.add_argument("--denoise", type=float, help="hires denoise (latent 0.55, Lanczos 0.35)")
    hires.add_argument(
        "--upscaler",
        help=f"one of: {', '.join(UPSCALER_NAMES)}, or a model in DATA_DIR/upscalers by file name"
        " (default Latent)",
    )
    parser.add_argument(
        "--parameters",
        type=Path,
        metavar="FILE",
        help="an A1111 recipe: a PNG with parameters, or a text file of A1111's PNG info; "
        "other options override its values",
    )
    more = parser.add_argument_group("from an earlier image (a PNG with parameters)")
    more.add_argument("--upscale", type=Path, metavar="IMAGE", help="upscale IMAGE (2x)")
    more.add_argument(
        "--factor", type=int, choices=(2, 4), default=2, help="--upscale factor: 2 or 4"
    )
    tiles = parser.add_argument_group("tiled upscale (big images; any of these tiles --upscale)")
    tiles.add_argument("--mode", choices=followups.UPSCALE_MODES, help="subtle or creative")
    tiles.add_argument("--tile", type=int, help=f"tile side in pixels ({TileSpec.size})")
    tiles.add_argument("--overlap", type=int, help=f"tile overlap in pixels ({TileSpec.overlap})")
    more.add_argument("--vary", type=Path, metavar="IMAGE", help="variations of IMAGE")
    more.add_argument("--init", type=Path, metavar="IMAGE", help="image to image from IMAGE")
    more.add_argument(
        "--strength",
        help="--vary: subtle or strong (default); --init: 0-1 (default 0.6; --mask 0.75; "
        "--outpaint, --zoom-out, --pan, --square 1)",
    )
    edits.add_arguments(parser)
    controls.add_arguments(parser)
    image_prompts.add_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (./out)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=generate)


class CliDelivery:
    """The CLI's presenter: a progress bar while the job runs, the outcome kept for main()."""

    def __init__(self, bar: ProgressBar) -> None:
        self.bar = bar
        self.generation: Generation | None = None
        self.failure: str | None = None
        self.started_at: float | None = None

    def progress(self, job: StoredJob, step: int, total: int, preview: Image | None) -> None:
        self.started_at = self.started_at or time.perf_counter()
        # A tiled upscale counts tiles: every tile at every step (docs/upscaling.md).
        self.bar.update(step, total, "tile" if job.request.tiles else None)

    async def deliver(self, job: StoredJob, generation: Generation) -> None:
        self.generation = generation

    async def report_failure(self, job: StoredJob, message: str) -> None:
        self.failure = message


def generate(args: argparse.Namespace, settings: Settings) -> int:
    sources = [flag for flag in ("upscale", "vary", "init") if getattr(args, flag)]
    if len(sources) > 1:
        raise UserError(f"use only one of --{' / --'.join(sources)}")
    if args.parameters is not None and (args.upscale or args.vary):
        raise UserError("use --parameters or --upscale / --vary: those read the image's own")
    if not args.prompt and not (args.upscale or args.vary or args.parameters):
        raise UserError('give a prompt, for example: dreamcord generate "a red fox"')
    edit = edits.chosen_edit(args)  # flags that do not fit together stop here
    if edit is not None and args.controls:
        raise UserError(
            f"--control does not go with --{edit.replace('_', '-')}: the edited canvas would not "
            "match the control map; edit first, then guide a new image from the result"
        )
    asks = controls.asks_of(args)
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="dreamcord-edit-") as scratch,
        ProgressBar("generating") as bar,
    ):
        delivery = CliDelivery(bar)
        request, notes = asyncio.run(_generate(args, settings, delivery, Path(scratch), asks))
        if delivery.failure is not None or delivery.generation is None:
            raise UserError(f"generation failed: {delivery.failure or 'no result'}")
        maps = _write_maps(request, args)  # from the scratch folder, before it goes
    images = _write_outputs(delivery.generation, settings, args)
    if args.json:
        finished = time.perf_counter()
        timings = {
            "wait_s": round((delivery.started_at or finished) - started, 3),
            "wall_s": round(finished - started, 3),
        }
        report = {
            "images": images,
            "params": asdict(request),
            "notes": list(notes),
            "timings": timings,
            "controls": [
                {**asdict(unit), "image": None, "map": path}
                for unit, path in zip(request.controls, maps, strict=True)
            ],
        }
        json.dump(report, sys.stdout)
        print()
    return 0


async def _generate(
    args: argparse.Namespace,
    settings: Settings,
    delivery: CliDelivery,
    scratch: Path,
    asks: Sequence[ControlAsk] = (),
) -> tuple[GenerationRequest, tuple[str, ...]]:
    """Build the request (a mistake stops here, before the model loads), then run it.

    An edit's canvas and mask, and the control maps of `asks`, are written into `scratch`,
    which outlives the job.
    """
    db, repos = await open_database(settings)
    try:
        libraries = await read_libraries(settings, repos, args.model)
        guided = asks or args.upscale is not None  # a tiled upscale may take the tile model
        controlnets = await read_controlnets(settings, repos, args.model) if guided else None
        control_models = await controlnets.list() if controlnets else []
    finally:
        await db.close()
    request, notes = request_from_args(args, settings, libraries, scratch)
    if args.upscale is not None and request.tiles is not None:
        request = followups.with_tile_control(request, tile_model(control_models))
    annotators = Annotators(settings.data_dir / ANNOTATORS_FOLDER)
    request = controls.with_controls(request, asks, control_models, scratch, annotators)
    request = check_request(request, limits_of(settings))
    if not args.json:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    if args.model == "tiny" or (args.model is None and settings.model == "tiny"):
        print("note: the tiny model has random weights: its images are noise", file=sys.stderr)
    services = await open_services(settings, delivery, model_override=args.model)
    try:
        ticket = await services.app.jobs.submit(request, Origin(user_id=CLI_USER_ID))
        await services.app.jobs.wait(ticket.job_id)
    finally:
        await services.close()
    return request, notes


def request_from_args(
    args: argparse.Namespace,
    settings: Settings,
    libraries: tuple[FileSource, FileSource, FileSource],
    scratch: Path,
) -> tuple[GenerationRequest, tuple[str, ...]]:
    """Options over a pasted recipe over the defaults, and the recipe's and the edit's notes.

    The recipe is `--parameters`, or the earlier image's parameters for --upscale and --vary.
    """
    edit = edits.chosen_edit(args)
    picture = None
    explicit: dict[str, Any] = {
        "count": 1 if args.count is None else args.count,
        "seed": args.seed,
        "steps": args.steps,
        "cfg": args.cfg,
        "sampler": args.sampler,
        "schedule": args.schedule,
        "clip_skip": args.clip_skip,
        "hires": args.hires,
        "fast": args.fast,
        "hires_scale": args.hires_scale,
        "hires_steps": args.hires_steps,
        "hires_denoise": args.denoise,
        "hires_upscaler": args.upscaler,
        "rng": None if args.rng is None else find_rng(args.rng),
        "ensd": None if args.ensd is None else parse_ensd(args.ensd),
    }
    if args.size:
        explicit["width"], explicit["height"] = parse_size(args.size, settings.max_pixels)
    if args.init is not None:
        image, _ = read_png(args.init)
        if not args.size:
            explicit["width"], explicit["height"] = fit_size(
                image.width, image.height, settings.max_pixels
            )
        size = (explicit["width"], explicit["height"])
        picture = image if image.size == size else image.resize(size, Resampling.LANCZOS)
    if args.model:  # the engine's default model is then --model, with its own defaults
        settings = settings.model_copy(update={"model": args.model})
    recipe = _recipe(args, settings, libraries, explicit)
    notes = recipe.notes if recipe else ()
    prompt = args.prompt if recipe is None or recipe.prompt is None else recipe.prompt
    negative = args.negative if recipe is None or recipe.negative is None else recipe.negative
    if recipe is not None and recipe.strength is not None and args.init is None:
        notes += (
            f"Denoising strength: {recipe.strength:g} is for image to image (the recipe has no "
            "hires fields): add --init IMAGE to start from a picture",
        )
    if args.upscale or args.vary:
        explicit["count"] = 1
    loras, embeddings, hypernets = libraries
    parsed = build_request(
        prompt or "",
        settings,
        negative=negative,
        explicit=explicit,
        known_loras=loras.names(),
        known_embeddings=embeddings.names(),
        known_hypernets=hypernets.names(),
        pasted=recipe.options if recipe else None,
    )
    request = image_prompts.with_cli_image_prompts(parsed, args)
    if edit is None:
        return _with_source(args, settings, request, recipe), notes
    assert picture is not None  # chosen_edit asks for --init
    built = edits.build_edit(args, edit, picture, settings.max_pixels)
    pasted_spec = recipe.inpaint if recipe else None
    request = edits.apply_edit(request, built, args, settings, scratch, pasted_spec)
    pasted = recipe.strength if recipe else None
    strength = _number_strength(args.strength, pasted or edits.default_strength(built))
    return replace(request, strength=strength), notes + built.notes


def _recipe(
    args: argparse.Namespace,
    settings: Settings,
    libraries: tuple[FileSource, FileSource, FileSource],
    explicit: dict[str, Any],
) -> Recipe | None:
    """The pasted recipe, read under the options given with it; None without one."""
    source = args.upscale or args.vary
    if args.parameters is not None:
        text = read_parameters(args.parameters)
    elif source is not None:
        _, saved = read_png(source)
        if not saved:
            raise UserError(f"{source} has no generation parameters: use a PNG made by an SD tool")
        text = saved
    else:
        return None
    given = {**explicit, "prompt": args.prompt, "negative": args.negative, "model": args.model}
    recipe = RecipeReader(settings, libraries, args.model).read(text, given)
    set_here = {key for key, value in explicit.items() if value is not None}
    if source is not None and not {"seed", "width"} <= {*recipe.options, *set_here}:
        raise UserError(
            f"the parameters of {source} have no Seed or Size: use a PNG made by Dreamcord, "
            "A1111, Forge or ComfyUI with its parameters kept"
        )
    return recipe


def _with_source(
    args: argparse.Namespace,
    settings: Settings,
    request: GenerationRequest,
    recipe: Recipe | None,
) -> GenerationRequest:
    """The request turned into an upscale, variations or image to image where asked."""
    if args.upscale is not None:
        path = args.upscale.resolve()
        if args.mode or args.tile or args.overlap is not None:
            return _tiled(args, request, path)
        return followups.upscale(request, path, request.seed, None, args.factor)
    if args.vary is not None:
        strength = args.strength or "strong"
        if strength not in followups.VARIATION_STRENGTH:
            raise UserError(f"--strength {strength!r} with --vary: use subtle or strong")
        count = min(4, settings.max_images) if args.count is None else args.count
        return followups.variations(request, request.seed, None, strength, count)
    if args.init is not None:
        pasted = recipe.strength if recipe else None
        return replace(
            request,
            mode=Mode.IMG2IMG,
            init_image=str(args.init.resolve()),
            strength=_number_strength(args.strength, pasted or DEFAULT_IMG2IMG_STRENGTH),
        )
    return request


def _tiled(args: argparse.Namespace, request: GenerationRequest, path: Path) -> GenerationRequest:
    """--upscale with --mode, --tile or --overlap: a tiled upscale (docs/upscaling.md)."""
    defaults = followups.TiledUpscale()
    choices = replace(
        defaults,
        tile=args.tile or defaults.tile,
        overlap=defaults.overlap if args.overlap is None else args.overlap,
    )
    mode = args.mode or "subtle"
    return followups.tiled_upscale(request, path, request.seed, None, args.factor, mode, choices)


def read_parameters(path: Path) -> str:
    """The A1111 infotext of a PNG, JPEG or WebP (as A1111 keeps it), or of a text file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: check the path") from None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    if data.startswith((PNG_SIGNATURE, JPEG_SIGNATURE)) or data[8:12] == b"WEBP":
        _, text = read_png(path)
        if not text:
            raise UserError(
                f"{path} has no parameters: its maker did not keep them (copy them from "
                "Civitai or A1111's PNG Info tab into a text file and pass that)"
            )
        return text
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(
            f"{path} is neither a picture nor a UTF-8 text file: pass a PNG, JPEG or WebP with "
            "parameters or "
            "a text file holding A1111's PNG info"
        ) from None


def _number_strength(text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--strength {text!r} with --init: use a number from 0 to 1") from None


def _write_maps(request: GenerationRequest, args: argparse.Namespace) -> list[str | None]:
    """Copy each unit's map where --control-map-out asks; the paths written, in unit order."""
    if args.control_map_out is None:
        return [None] * len(request.controls)
    targets = controls.map_out_paths(args.control_map_out, len(request.controls))
    args.control_map_out.parent.mkdir(parents=True, exist_ok=True)
    for unit, target in zip(request.controls, targets, strict=True):
        write_atomically(target, Path(unit.image).read_bytes())
    return [str(target) for target in targets]


def _write_outputs(
    generation: Generation, settings: Settings, args: argparse.Namespace
) -> list[dict[str, Any]]:
    args.out.mkdir(parents=True, exist_ok=True)
    images = []
    for image in generation.images:
        path = free_path(args.out, f"{time.strftime('%Y%m%d-%H%M%S')}-{image.seed}")
        source = settings.data_dir / "images" / image.path
        write_atomically(path, source.read_bytes())
        entry = {
            "path": str(path),
            "seed": image.seed,
            "width": image.width,
            "height": image.height,
        }
        if image.variation_seed is not None:
            entry["variation_seed"] = image.variation_seed
        if image.flagged is not None:
            entry["flagged"] = image.flagged
        images.append(entry)
        if not args.json:
            # The CLI's user asked for the file on their own disk: it is reported, not withheld.
            print(f"{path} (flagged by the safety checker)" if image.flagged else path)
    return images


def free_path(folder: Path, stem: str) -> Path:
    """`folder/stem.png`, or `stem-1.png` and so on when that name is taken."""
    path, number = folder / f"{stem}.png", 0
    while path.exists():
        number += 1
        path = folder / f"{stem}-{number}.png"
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Write through a temp file and rename, so no half-written PNG is ever visible."""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        temp.write_bytes(data)
        temp.replace(path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise UserError(f"could not write {path}: {error.strerror}") from None
