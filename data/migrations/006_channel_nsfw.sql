-- v6: whether the channel a job was asked in is NSFW, kept with the job and its generation, so
-- an image made there is never posted again into an SFW channel (bot.gallery decides).
-- Rows from before this version did not record it: they count as NSFW, the safe side.

ALTER TABLE jobs ADD COLUMN channel_nsfw INTEGER NOT NULL DEFAULT 1 CHECK (channel_nsfw IN (0, 1));
ALTER TABLE generations ADD COLUMN channel_nsfw INTEGER NOT NULL DEFAULT 1
    CHECK (channel_nsfw IN (0, 1));
