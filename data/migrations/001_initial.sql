-- Dreamcord schema v1: jobs, finished generations and their images, favourites, the LoRA and
-- embedding registries, and per-guild/per-user settings.
-- Conventions: timestamps are fixed-width UTC ISO-8601 text (data/clock.py); Discord ids are
-- INTEGER (snowflakes fit in 63 bits); JSON lives in TEXT checked by json_valid; STRICT tables
-- so a seed can never be stored as a REAL and lose digits.

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY CHECK (length(id) = 32),
    state             TEXT NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    user_id           INTEGER NOT NULL,
    guild_id          INTEGER,                -- NULL in DMs and for CLI jobs
    channel_id        INTEGER,                -- NULL for CLI jobs
    interaction_id    INTEGER,
    interaction_token TEXT,                   -- cleared once delivered: it is a credential
    message_id        INTEGER,                -- the bot's status message, once posted
    request_json      TEXT NOT NULL CHECK (json_valid(request_json)),
    priority          INTEGER NOT NULL DEFAULT 0,
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    error             TEXT,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT,
    delivered_at      TEXT                    -- set once: the guard against posting twice
) STRICT;

-- Start-up recovery asks for queued and running jobs in creation order.
CREATE INDEX jobs_by_state ON jobs (state, created_at);

-- AUTOINCREMENT: generation and image ids live on in button custom_ids of old messages, so an
-- id must never be handed out twice, even after the newest row is gone.
CREATE TABLE generations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          TEXT NOT NULL UNIQUE REFERENCES jobs (id),
    user_id         INTEGER NOT NULL,
    guild_id        INTEGER,
    channel_id      INTEGER,
    message_id      INTEGER,                  -- the result message, once posted
    operation       TEXT NOT NULL
                    CHECK (operation IN ('txt2img', 'img2img', 'upscale', 'variation', 'reroll')),
    parent_image_id INTEGER REFERENCES images (id),
    request_json    TEXT NOT NULL CHECK (json_valid(request_json)),
    created_at      TEXT NOT NULL,
    deleted_at      TEXT
) STRICT;

CREATE TABLE images (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    generation_id  INTEGER NOT NULL REFERENCES generations (id),
    idx            INTEGER NOT NULL CHECK (idx >= 0),
    -- 2**53 - 1: the largest integer JSON and Discord number options carry exactly.
    seed           INTEGER NOT NULL CHECK (seed BETWEEN 0 AND 9007199254740991),
    variation_seed INTEGER CHECK (variation_seed BETWEEN 0 AND 9007199254740991),
    width          INTEGER NOT NULL CHECK (width > 0),
    height         INTEGER NOT NULL CHECK (height > 0),
    path           TEXT NOT NULL,             -- relative to the image store root
    sha256         TEXT NOT NULL CHECK (length(sha256) = 64),
    size_bytes     INTEGER NOT NULL CHECK (size_bytes > 0),
    parameters     TEXT NOT NULL,             -- A1111 infotext, as written into the PNG
    UNIQUE (generation_id, idx)
) STRICT;

CREATE TABLE favourites (
    id         INTEGER PRIMARY KEY,           -- insertion order gives "newest first"
    user_id    INTEGER NOT NULL,
    image_id   INTEGER NOT NULL REFERENCES images (id),
    created_at TEXT NOT NULL,
    UNIQUE (user_id, image_id)
) STRICT;

CREATE TABLE loras (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL,             -- as the admin typed it, for display
    name_key       TEXT NOT NULL UNIQUE CHECK (name_key = lower(name)),
    sha256         TEXT NOT NULL UNIQUE CHECK (length(sha256) = 64),
    path           TEXT NOT NULL,             -- relative to the model store root
    kind           TEXT NOT NULL CHECK (kind IN ('lora', 'locon', 'loha', 'lokr')),
    base           TEXT NOT NULL CHECK (base IN ('sd1', 'sd2', 'sdxl', 'unknown')),
    rank           INTEGER CHECK (rank > 0),
    alpha          REAL,
    modules        INTEGER NOT NULL CHECK (modules >= 0),
    size_bytes     INTEGER NOT NULL CHECK (size_bytes > 0),
    triggers       TEXT NOT NULL DEFAULT '[]'
                   CHECK (json_valid(triggers) AND json_type(triggers) = 'array'),
    default_weight REAL NOT NULL DEFAULT 1.0,
    enabled        INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    added_by       INTEGER,                   -- NULL when added from the CLI or drop folder
    added_at       TEXT NOT NULL,
    source         TEXT NOT NULL CHECK (source IN ('attachment', 'url', 'folder', 'cli'))
) STRICT;

CREATE TABLE embeddings (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    name_key   TEXT NOT NULL UNIQUE CHECK (name_key = lower(name)),
    sha256     TEXT NOT NULL UNIQUE CHECK (length(sha256) = 64),
    path       TEXT NOT NULL,
    base       TEXT NOT NULL CHECK (base IN ('sd1', 'sd2', 'sdxl', 'unknown')),
    vectors    INTEGER NOT NULL CHECK (vectors > 0),
    size_bytes INTEGER NOT NULL CHECK (size_bytes > 0),
    enabled    INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    added_by   INTEGER,
    added_at   TEXT NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('attachment', 'url', 'folder', 'cli'))
) STRICT;

-- One row per key, so changing one setting never overwrites another set at the same time.
CREATE TABLE guild_settings (
    guild_id   INTEGER NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL CHECK (json_valid(value)),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (guild_id, key)
) STRICT;

CREATE TABLE user_settings (
    user_id    INTEGER NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL CHECK (json_valid(value)),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
) STRICT;
