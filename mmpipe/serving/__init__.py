"""The serving export: a SavedModel that cleans raw text and decodes raw image bytes like ingest does."""
