"""The application layer: one frozen `App` of per-feature services, for Discord and the CLI.

The cogs and the CLI call these services and nothing below them: no repository, no queue, no
library internals. Each service owns one feature's rules (InvokeAI's services container, Red's
`AliasCache` beside its cog), so most behaviour is tested without Discord. The container
(`bot.container`) builds the one `App` with `build_app`.

The result types the cogs read are named here too, so that `bot.app` is all they import.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.catalog import ModelCatalog, ModelInfo
from bot.controls import ControlAsk, ControlService, ShownUnit
from bot.defaults import SavedDefaults, UserDefaults
from bot.edits import (
    Edit,
    EditService,
    Operation,
    PreparedEdit,
    edit_label,
    parse_factor,
)
from bot.gallery import GONE, Gallery, Listed, Listing, Reach, Viewer
from bot.guild import SAFETY_DEFAULT, Actor, GuildRules, GuildSettings
from bot.jobs import JobService, Origin, QueuedJob, ServiceStatus, StoredJob, Ticket
from bot.libraries import AuditedLibrary, Libraries, NotAdded, download_rules, size_text
from bot.library import (
    ControlNetLibrary,
    EmbeddingLibrary,
    HypernetworkLibrary,
    LoraLibrary,
    ScanOutcome,
)
from bot.library_kinds import LibraryKind
from bot.names import KnownNames
from bot.policy import Place
from bot.previews import PREVIEW_WEIGHTS, LoraPreviews, Preview, preview_grid, screened
from bot.recipes import RecipeReader
from bot.request_builder import BLEND_DIMENSIONS, RequestBuilder
from bot.safety import SafetyMode, SafetyRules, Screening
from bot.settings import Settings
from bot.styles import Style, style_names
from bot.training import (
    PreparedRun,
    StartRun,
    Trainee,
    TrainingAsk,
    TrainingListener,
    TrainingService,
)
from bot.uploads import UPLOADS_FOLDER, Uploads
from data.generations import Generation, Image
from data.images import ImageStore
from data.registry import LoraEntry
from data.repositories import Repositories
from data.training import RunState, TrainingRun
from pipeline.canvas import REGIONS
from pipeline.control.annotators import ANNOTATORS_FOLDER, Annotators
from pipeline.errors import UserError
from pipeline.worker import Worker

__all__ = [
    "BLEND_DIMENSIONS",
    "GONE",
    "PREVIEW_WEIGHTS",
    "REGIONS",
    "SAFETY_DEFAULT",
    "Actor",
    "App",
    "AuditedLibrary",
    "ControlAsk",
    "Edit",
    "Generation",
    "GuildSettings",
    "Image",
    "LibraryKind",
    "Listed",
    "Listing",
    "LoraEntry",
    "ModelInfo",
    "NotAdded",
    "Operation",
    "Origin",
    "Place",
    "PreparedEdit",
    "PreparedRun",
    "Preview",
    "QueuedJob",
    "Reach",
    "RunState",
    "SafetyMode",
    "SavedDefaults",
    "ScanOutcome",
    "Screening",
    "ServiceStatus",
    "Settings",
    "ShownUnit",
    "StoredJob",
    "Style",
    "Ticket",
    "Trainee",
    "TrainingAsk",
    "TrainingListener",
    "TrainingRun",
    "Viewer",
    "build_app",
    "edit_label",
    "parse_factor",
    "preview_grid",
    "screened",
    "size_text",
    "style_names",
]


@dataclass(frozen=True)
class App:
    """Every service the front ends use, built once (see the module docstring)."""

    settings: Settings
    jobs: JobService
    """Submit (limits and policy inside), cancel, recover, deliver; the queue's state."""
    requests: RequestBuilder
    """From text and options (and an earlier request) to a `GenerationRequest`."""
    guild: GuildRules
    """A server's typed settings: policy, styles, default negative and model; audited."""
    gallery: Gallery
    """History, favourites, showing again, deleting with ownership, lineage."""
    libraries: Libraries
    """LoRAs, embeddings, hypernetworks and ControlNets: add, rename, enable, remove, scan;
    audited."""
    catalog: ModelCatalog
    """The configured models and a server's default."""
    defaults: UserDefaults
    """A user's saved defaults for /imagine."""
    previews: LoraPreviews
    """A new LoRA's preview at weights 0, 0.5 and 1."""
    safety: SafetyRules
    """Which images of a result may be posted where (the safety checker's verdicts)."""
    edits: EditService
    """Vary (Region), Zoom Out, Pan, Make Square and painted masks: canvas, mask, request."""
    controls: ControlService
    """ControlNet units: the model, the preprocessor, the map made and held for the job."""
    training: TrainingService
    """LoRA training runs: checked and planned, run between batches, registered when done."""


async def build_app(
    settings: Settings,
    repos: Repositories,
    images: ImageStore,
    libraries: tuple[LoraLibrary, EmbeddingLibrary, HypernetworkLibrary],
    controlnets: ControlNetLibrary,
    jobs: JobService,
    guild: GuildRules,
    start_run: StartRun | None = None,
) -> App:
    """The App over these parts (the container opens them: database, libraries, worker)."""
    loras, embeddings, hypernetworks = libraries
    names = KnownNames()
    names.attach(loras, embeddings, hypernetworks)
    catalog = await ModelCatalog.load(settings, guild)
    defaults = UserDefaults(repos.settings, guild, settings)
    uploads = Uploads(settings.data_dir / UPLOADS_FOLDER, repos.jobs, settings.max_pixels)
    gallery = Gallery(repos.generations, repos.favourites, images)
    requests = RequestBuilder(
        settings,
        guild,
        defaults,
        catalog,
        names,
        loras,
        images,
        RecipeReader(settings, (loras, embeddings, hypernetworks)),
        uploads,
        gallery,
        controlnets,
    )
    audited = Libraries(
        loras, embeddings, hypernetworks, controlnets, repos.audit, download_rules(settings)
    )
    return App(
        settings=settings,
        jobs=jobs,
        requests=requests,
        guild=guild,
        gallery=gallery,
        libraries=audited,
        catalog=catalog,
        defaults=defaults,
        previews=LoraPreviews(jobs, settings),
        safety=SafetyRules(guild, SafetyMode(settings.safety_checker)),
        edits=EditService(requests, gallery, uploads, settings.max_pixels),
        controls=ControlService(
            audited.controlnets, uploads, Annotators(settings.data_dir / ANNOTATORS_FOLDER)
        ),
        training=TrainingService(
            repos.training, lambda: model_thread(jobs), audited.loras, guild, settings, start_run
        ),
    )


def model_thread(jobs: JobService) -> Worker:
    """The in-process worker loop that training runs on; with remote workers there is none."""
    if not isinstance(jobs.worker, Worker):
        raise UserError("this bot's engine cannot train (it runs on remote workers)")
    return jobs.worker
