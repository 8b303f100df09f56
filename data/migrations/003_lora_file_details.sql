-- v3: what a LoRA file carries besides its modules: keys left out because they match no module
-- of the model, DoRA magnitudes, and the tokens of the embeddings it bundles (a JSON list).

ALTER TABLE loras ADD COLUMN skipped_keys INTEGER NOT NULL DEFAULT 0;
ALTER TABLE loras ADD COLUMN dora INTEGER NOT NULL DEFAULT 0;
ALTER TABLE loras ADD COLUMN embeddings TEXT NOT NULL DEFAULT '[]';
