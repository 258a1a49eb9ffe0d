"""Energy, carbon and cost: a pure model plus measurement adapters (RAPL, NVML)."""
