-- v9: the ControlNet registry, beside the LoRA, embedding and hypernetwork ones.

CREATE TABLE controlnets (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    name_key      TEXT NOT NULL UNIQUE CHECK (name_key = lower(name)),
    sha256        TEXT NOT NULL UNIQUE CHECK (length(sha256) = 64),
    path          TEXT NOT NULL,
    control_type  TEXT NOT NULL CHECK (control_type IN (
        'canny', 'depth', 'openpose', 'lineart', 'lineart_anime', 'softedge', 'scribble',
        'tile', 'normal', 'seg', 'mlsd', 'shuffle', 'ip2p', 'inpaint', 'qrcode', 'other')),
    layout        TEXT NOT NULL CHECK (layout IN ('original', 'diffusers')),
    base          TEXT NOT NULL CHECK (base IN ('sd1', 'sd2', 'sdxl', 'unknown')),
    hint_channels INTEGER NOT NULL CHECK (hint_channels > 0),
    parameters    INTEGER NOT NULL CHECK (parameters > 0),
    size_bytes    INTEGER NOT NULL CHECK (size_bytes > 0),
    enabled       INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    added_by      INTEGER,
    added_at      TEXT NOT NULL,
    source        TEXT NOT NULL CHECK (source IN ('attachment', 'url', 'folder', 'cli'))
) STRICT;
