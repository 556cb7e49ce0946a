"""Application layer: services that orchestrate domain objects and infrastructure."""
