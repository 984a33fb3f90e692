-- Alerts (docs/alerts.md): rules made through the API (the YAML file's are
-- read at startup and never stored), where each (rule, host) stands, every
-- transition (the history), and each notification of one to a channel.

CREATE TABLE alert_rules (
    name          TEXT PRIMARY KEY,
    -- The rule as written (services::alerts::rules::RuleSpec), JSON.
    spec          TEXT NOT NULL,
    created_at_us INTEGER NOT NULL
);

CREATE TABLE alert_states (
    rule_name      TEXT NOT NULL,
    client_id      INTEGER NOT NULL,
    state          TEXT NOT NULL,
    since_us       INTEGER NOT NULL,
    value          REAL,
    notified_at_us INTEGER,
    PRIMARY KEY (rule_name, client_id)
);

CREATE TABLE alert_events (
    id        INTEGER PRIMARY KEY,
    rule_name TEXT NOT NULL,
    client_id INTEGER NOT NULL,
    host      TEXT NOT NULL,
    state     TEXT NOT NULL,
    at_us     INTEGER NOT NULL,
    -- When the alert entered this state (a repeat: when it began firing).
    since_us  INTEGER NOT NULL,
    value     REAL,
    threshold REAL,
    severity  TEXT NOT NULL,
    summary   TEXT NOT NULL,
    is_repeat BOOLEAN NOT NULL
);
CREATE INDEX alert_events_by_time ON alert_events (at_us);

CREATE TABLE alert_deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        INTEGER NOT NULL REFERENCES alert_events (id) ON DELETE CASCADE,
    channel         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_us INTEGER NOT NULL,
    last_error      TEXT,
    sent_at_us      INTEGER
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (status, next_attempt_us);
CREATE INDEX alert_deliveries_by_event ON alert_deliveries (event_id);
