-- v10: LoRA training runs (issue 21): what was asked, where it stands, where its files and its
-- Discord status message are, so a restart resumes the run and edits the same message.

CREATE TABLE training_runs (
    id          INTEGER PRIMARY KEY,
    guild_id    INTEGER,
    user_id     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    options     TEXT NOT NULL CHECK (json_valid(options)),
    state       TEXT NOT NULL CHECK (state IN (
        'queued', 'running', 'paused', 'done', 'failed', 'cancelled')),
    step        INTEGER NOT NULL DEFAULT 0 CHECK (step >= 0),
    total       INTEGER NOT NULL CHECK (total > 0),
    last_loss   REAL,
    losses      TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(losses)),
    work_dir    TEXT NOT NULL,
    error       TEXT,
    channel_id  INTEGER,
    message_id  INTEGER,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    finished_at TEXT
) STRICT;

-- One unfinished run per LoRA name, whatever its case.
CREATE UNIQUE INDEX training_runs_unfinished_name ON training_runs (lower(name))
    WHERE state IN ('queued', 'running', 'paused');
CREATE INDEX training_runs_guild ON training_runs (guild_id, id);
