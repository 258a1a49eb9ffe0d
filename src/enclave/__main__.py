"""`python -m enclave` is the `enclave` command."""

from enclave.cli.main import main

main()
