"""Model serving: the replica process behind an endpoint.

A replica is one long-running job (``python -m enclave.serving.replica``) that loads one model
with one *runtime* and serves it over OpenAI-compatible HTTP on an ephemeral port. The gateway
in front of it owns names, auth, quotas and metering; a replica only reports ``usage``.
"""
