-- retailflow's ERP interface tables (docs/ERP.md, "PostgreSQL interface tables").
-- retailflow inserts; the ERP's import job reads rows with import_status = 'new' and sets
-- import_status to 'imported' or 'error' (with import_message). Money is BIGINT minor units
-- of the header's currency; quantities are BIGINT units.

CREATE TABLE rf_document (
    document_id        text PRIMARY KEY,
    endpoint           text NOT NULL,
    kind               text NOT NULL CHECK (kind IN
                           ('sales_summary', 'tender_summary', 'tax_summary', 'inventory_movements')),
    location           text NOT NULL,
    business_day       date,
    currency           char(3),
    barrier_seq        bigint NOT NULL,
    part               integer NOT NULL,
    page               integer NOT NULL,
    pages              integer NOT NULL,
    lineage_events     bigint NOT NULL,
    lineage_first_seq  bigint NOT NULL,
    lineage_last_seq   bigint NOT NULL,
    line_count         integer NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    import_status      text NOT NULL DEFAULT 'new'
                           CHECK (import_status IN ('new', 'imported', 'error')),
    import_message     text,
    status_changed_at  timestamptz,
    -- Set by the trigger below on every change of import_status; retailflow's read-back
    -- copies it into status_reported once it has handed the change on.
    status_seq         bigint,
    status_reported    bigint
);

-- The import job's queue.
CREATE INDEX rf_document_new ON rf_document (created_at) WHERE import_status = 'new';
-- Changes of status retailflow has not read back yet.
CREATE INDEX rf_document_unreported ON rf_document (status_seq)
    WHERE status_seq IS DISTINCT FROM status_reported;

CREATE SEQUENCE rf_document_status_seq;

CREATE FUNCTION rf_document_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.import_status IS DISTINCT FROM OLD.import_status
       OR NEW.import_message IS DISTINCT FROM OLD.import_message THEN
        NEW.status_changed_at := clock_timestamp();
        NEW.status_seq := nextval('rf_document_status_seq');
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER rf_document_status_changed
    BEFORE UPDATE OF import_status, import_message ON rf_document
    FOR EACH ROW EXECUTE FUNCTION rf_document_status_changed();

CREATE TABLE rf_sales_line (
    document_id      text NOT NULL REFERENCES rf_document (document_id) ON DELETE CASCADE,
    line_no          integer NOT NULL,
    sku              text NOT NULL,
    tax_code         text NOT NULL,
    qty_sold         bigint NOT NULL,
    qty_returned     bigint NOT NULL,
    sales_amount     bigint NOT NULL,
    returns_amount   bigint NOT NULL,
    discount_amount  bigint NOT NULL,
    tax_amount       bigint NOT NULL,
    PRIMARY KEY (document_id, line_no)
);

CREATE TABLE rf_tender_line (
    document_id   text NOT NULL REFERENCES rf_document (document_id) ON DELETE CASCADE,
    line_no       integer NOT NULL,
    tender        text NOT NULL,
    paid          bigint NOT NULL,
    refunded      bigint NOT NULL,
    transactions  bigint NOT NULL,
    PRIMARY KEY (document_id, line_no)
);

CREATE TABLE rf_tax_line (
    document_id     text NOT NULL REFERENCES rf_document (document_id) ON DELETE CASCADE,
    line_no         integer NOT NULL,
    tax_code        text NOT NULL,
    taxable_amount  bigint NOT NULL,
    tax_amount      bigint NOT NULL,
    PRIMARY KEY (document_id, line_no)
);

CREATE TABLE rf_movement_line (
    document_id  text NOT NULL REFERENCES rf_document (document_id) ON DELETE CASCADE,
    line_no      integer NOT NULL,
    location     text NOT NULL,
    sku          text NOT NULL,
    reason       text NOT NULL,
    qty          bigint NOT NULL,
    PRIMARY KEY (document_id, line_no)
);
