"""Tests of the pure scheduler core (``enclave.scheduler``): a tiny event driver, brute-force
reference schedulers and property tests over small random fleets and workloads."""
