-- Labels an admin gives hosts (`PUT /api/v1/clients/{name}/labels`), to
-- group and filter a large fleet: "db", "prod", "rack-4".
CREATE TABLE client_labels (
    client_id INTEGER NOT NULL REFERENCES clients (id),
    label     TEXT NOT NULL,
    PRIMARY KEY (client_id, label)
);
