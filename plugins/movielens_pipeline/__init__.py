"""Reusable parts of the MovieLens zero-ETL pipeline (shipped to MWAA as plugins.zip)."""
