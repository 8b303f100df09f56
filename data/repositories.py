"""Every repository over one database, built once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from data.audit import AuditRepository
from data.db import Database
from data.favourites import FavouriteRepository
from data.generations import GenerationRepository
from data.jobs import JobRepository
from data.registry import (
    ControlNetRepository,
    EmbeddingRepository,
    HypernetworkRepository,
    LoraRepository,
)
from data.settings import SettingsRepository
from data.training import TrainingRepository


@dataclass(frozen=True)
class Repositories:
    jobs: JobRepository
    generations: GenerationRepository
    favourites: FavouriteRepository
    loras: LoraRepository
    embeddings: EmbeddingRepository
    hypernetworks: HypernetworkRepository
    controlnets: ControlNetRepository
    settings: SettingsRepository
    audit: AuditRepository
    training: TrainingRepository

    @classmethod
    def over(cls, db: Database) -> Repositories:
        return cls(
            jobs=JobRepository(db),
            generations=GenerationRepository(db),
            favourites=FavouriteRepository(db),
            loras=LoraRepository(db),
            embeddings=EmbeddingRepository(db),
            hypernetworks=HypernetworkRepository(db),
            controlnets=ControlNetRepository(db),
            settings=SettingsRepository(db),
            audit=AuditRepository(db),
            training=TrainingRepository(db),
        )
