"""Serving: exported models, their formats and metadata (``export``) and predictions on
pictures (``predict``).

Imports nothing itself.
"""
