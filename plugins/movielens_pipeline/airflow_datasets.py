"""Airflow Datasets for the Aurora tables.

The URI's host names the Airflow connection, not an endpoint, so that it is the same in
every environment and needs no lookup when the DAG is parsed.
"""

from __future__ import annotations

from movielens_pipeline.compat import Dataset
from movielens_pipeline.tables import SOURCE_DATABASE, SOURCE_SCHEMA, TABLES

AURORA_TABLE_DATASETS = [
    Dataset(f"postgres://movielens-aurora:5432/{SOURCE_DATABASE}/{SOURCE_SCHEMA}/{table.name}")
    for table in TABLES
]
