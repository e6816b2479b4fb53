"""Command-line shells over Mita's services."""
