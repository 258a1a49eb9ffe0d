"""Enclave: a self-hosted AI + HPC cloud control plane with mandatory access control."""

__version__ = "0.1.0"
