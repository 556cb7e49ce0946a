"""Database clients for the hot store (PostgreSQL arrives with the hot-storage issue)."""
