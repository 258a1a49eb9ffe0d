"""Tamper-evident audit log: hash-chained, Ed25519-signed records with signed checkpoints."""
