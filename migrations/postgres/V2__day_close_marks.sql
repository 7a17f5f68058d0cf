-- Business-day close (docs/FINANCE.md): a document formed at the barrier that closed its day is
-- final; a correction names the barrier at which its day had closed.
ALTER TABLE rf_document
    ADD COLUMN is_final boolean NOT NULL DEFAULT false,
    ADD COLUMN corrects_barrier bigint;
