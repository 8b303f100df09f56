-- v7: the safety checker's verdict on each image: 1 flagged, 0 not, NULL when no checker ran
-- (SAFETY_CHECKER=off, or made before v7). Kept so that showing an image again respects it.

ALTER TABLE images ADD COLUMN flagged INTEGER CHECK (flagged IN (0, 1));
