-- v2: the admin audit log, and the indexes behind a user's history and favourites pages.

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id   INTEGER,                       -- NULL for CLI actions
    user_id    INTEGER,                       -- NULL when the bot acted on its own
    action     TEXT NOT NULL,
    target     TEXT,
    detail     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(detail)),
    created_at TEXT NOT NULL
) STRICT;

-- An index on one column also holds the rowid, so each of these serves
-- "WHERE owner = ? ORDER BY id DESC" as a backwards range scan: no sort, no table scan.
CREATE INDEX audit_log_by_guild ON audit_log (guild_id);
CREATE INDEX generations_history ON generations (user_id) WHERE deleted_at IS NULL;
CREATE INDEX favourites_by_user ON favourites (user_id);

-- Delivery recovery after a restart: finished jobs whose result was never posted.
CREATE INDEX jobs_undelivered ON jobs (finished_at)
    WHERE delivered_at IS NULL AND state IN ('done', 'failed', 'cancelled');
