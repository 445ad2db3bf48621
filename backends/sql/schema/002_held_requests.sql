-- easync schema, version 2: the long polls (Ping, Sync with Wait) held right now.
--
-- One row per device holding a request, written by the node (process) that holds it,
-- in batches (easync.push.HoldRecorder): easync-admin device list shows which devices
-- hold a Ping and on which node.  deadline is when the hold's heartbeat ends: a row whose
-- deadline has passed was left by a node that stopped without clearing it.
CREATE TABLE held_requests (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    node TEXT NOT NULL,
    command TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    deadline DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE INDEX held_requests_node ON held_requests (node);
