-- v8: generations made by the image edits: 'inpaint' (Vary (Region), a painted mask) and
-- 'outpaint' (Zoom Out, Pan, Make Square). SQLite cannot change a CHECK constraint in place, so
-- the table is rebuilt as its documentation describes (foreign keys off around the migration,
-- checked before it commits): same columns, same ids, the AUTOINCREMENT counter kept, so ids in
-- old buttons are never handed out again.
-- rebuilds tables

CREATE TABLE generations_v8 (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          TEXT NOT NULL UNIQUE REFERENCES jobs (id),
    user_id         INTEGER NOT NULL,
    guild_id        INTEGER,
    channel_id      INTEGER,
    message_id      INTEGER,                  -- the result message, once posted
    operation       TEXT NOT NULL
                    CHECK (operation IN ('txt2img', 'img2img', 'upscale', 'variation', 'reroll',
                                         'inpaint', 'outpaint')),
    parent_image_id INTEGER REFERENCES images (id),
    request_json    TEXT NOT NULL CHECK (json_valid(request_json)),
    created_at      TEXT NOT NULL,
    deleted_at      TEXT,
    channel_nsfw    INTEGER NOT NULL DEFAULT 1 CHECK (channel_nsfw IN (0, 1))
) STRICT;

INSERT INTO generations_v8 (id, job_id, user_id, guild_id, channel_id, message_id, operation,
                            parent_image_id, request_json, created_at, deleted_at, channel_nsfw)
SELECT id, job_id, user_id, guild_id, channel_id, message_id, operation, parent_image_id,
       request_json, created_at, deleted_at, channel_nsfw
FROM generations;

DELETE FROM sqlite_sequence WHERE name = 'generations_v8';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'generations_v8', seq FROM sqlite_sequence WHERE name = 'generations';

DROP TABLE generations;
ALTER TABLE generations_v8 RENAME TO generations;
CREATE INDEX generations_history ON generations (user_id) WHERE deleted_at IS NULL;
