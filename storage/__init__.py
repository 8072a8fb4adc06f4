"""Catalog, file store, retention."""
