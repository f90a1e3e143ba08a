"""Where applied plans live: every apply is a numbered, hashed, timestamped version."""

from featurestore.registry.file_registry import FileRegistry, PlanWatch, RegistryVersion

__all__ = ["FileRegistry", "PlanWatch", "RegistryVersion"]
