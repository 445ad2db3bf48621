-- easync schema, version 12: the device policy (issue #14 point 4, easync.policy).
--
-- The server's policy comes from its configuration (--policy, [policy]), a user's own
-- settings from easync-admin policy set (kept in users.extra, no column); what is
-- stored here is what each device did with the policy it was sent.

-- The fingerprint (easync.policy.fingerprint) of the policy the device acknowledged:
-- when the user's policy no longer has it, the device is sent back to Provision
-- (Status 143 / HTTP 449).  NULL: provisioned before this version, i.e. the
-- permissive policy easync always sent.
ALTER TABLE devices ADD COLUMN policy_hash TEXT;
-- The Status the device gave in its last acknowledgement (MS-ASPROV 2.2.2.54.1):
-- 1 applied, 2 partially applied, 3 not applied, 4 managed by a third party; and
-- whether it was refused for it (allow-non-provisionable off): "refused:2" etc.
-- NULL: never acknowledged a policy.
ALTER TABLE devices ADD COLUMN policy_status TEXT;
