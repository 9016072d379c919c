"""Importers: third-party face models and registered corpora into the package's model format."""
