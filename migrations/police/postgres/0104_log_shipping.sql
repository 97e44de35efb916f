-- How far the adapter's transparency log has been shipped to the hub over the receipts topic
-- (supervision contract §2): entries below `entries` and checkpoints up to `checkpoint_size`
-- have been acknowledged by Kafka. One row, advanced only after an acknowledgement, so a
-- restart ships again from the last acknowledged point (the hub keeps each index once).
CREATE TABLE log_shipped (
    id              BIGINT PRIMARY KEY CHECK (id = 1),
    entries         BIGINT NOT NULL,
    checkpoint_size BIGINT NOT NULL
);
INSERT INTO log_shipped (id, entries, checkpoint_size) VALUES (1, 0, 0);
