"""Use cases: each function authorises through the policy gate, changes state in one
transaction and records what it did in the audit log within that same transaction."""
