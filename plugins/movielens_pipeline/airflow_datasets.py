"""Airflow Datasets for the source (Aurora) tables.

The URI's host names the Airflow connection, not an endpoint, so that it is the same in
every environment and needs no lookup when the DAG is parsed.
"""

from __future__ import annotations

from movielens_pipeline.compat import Dataset
from movielens_pipeline.names import SOURCE_CONN_ID, SOURCE_DATABASE, SOURCE_SCHEMA
from movielens_pipeline.tables import TABLES

_HOST = SOURCE_CONN_ID.replace("_", "-")  # a host name has no underscores
SOURCE_TABLE_DATASETS = [
    Dataset(f"postgres://{_HOST}:5432/{SOURCE_DATABASE}/{SOURCE_SCHEMA}/{table.name}")
    for table in TABLES
]
