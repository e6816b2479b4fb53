"""The master key and sealing, as the keystores know them: :mod:`mita.sealing`, which sits below them."""

from mita.sealing import DEFAULT_FILE, KeyStoreError, master_key, seal, unseal

__all__ = ["DEFAULT_FILE", "KeyStoreError", "master_key", "seal", "unseal"]
