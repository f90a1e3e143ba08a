"""Where applied plans live: every apply is a numbered, hashed, timestamped version."""

from featurestore.registry.file_registry import FileRegistry, RegistryVersion

__all__ = ["FileRegistry", "RegistryVersion"]
