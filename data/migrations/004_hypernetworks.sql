-- v4: the hypernetwork registry, beside the LoRA and embedding ones.

CREATE TABLE hypernetworks (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    name_key   TEXT NOT NULL UNIQUE CHECK (name_key = lower(name)),
    sha256     TEXT NOT NULL UNIQUE CHECK (length(sha256) = 64),
    path       TEXT NOT NULL,
    base       TEXT NOT NULL CHECK (base IN ('sd1', 'sd2', 'sdxl', 'unknown')),
    widths     TEXT NOT NULL CHECK (json_valid(widths)),    -- e.g. [320, 640, 768, 1280]
    structure  TEXT NOT NULL CHECK (json_valid(structure)), -- A1111's layer_structure
    activation TEXT NOT NULL,                               -- 'linear' when none
    layer_norm INTEGER NOT NULL CHECK (layer_norm IN (0, 1)),
    size_bytes INTEGER NOT NULL CHECK (size_bytes > 0),
    enabled    INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    added_by   INTEGER,
    added_at   TEXT NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('attachment', 'url', 'folder', 'cli'))
) STRICT;
