"""Test helpers: fake servers, fake NVML, synthetic GGUF files."""
