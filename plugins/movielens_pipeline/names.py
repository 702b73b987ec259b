"""The names every hop agrees on, declared once (the README's glossary explains them).

- source: Aurora PostgreSQL, database ``transactional``, where the application writes.
- replica: the tables zero-ETL replicates; on Redshift the read-only database
  ``movielens_raw``, locally the same schema inside the warehouse database.
- warehouse: the Redshift cluster or workgroup (locally a second PostgreSQL server).
- analytics: the ``analytics_movie_insights`` database that dbt builds.
"""

AWS_CONN_ID = "aws_default"
SOURCE_CONN_ID = "movielens_aurora"
WAREHOUSE_CONN_ID = "movielens_redshift"

SOURCE_DATABASE = "transactional"
SOURCE_SCHEMA = "movielens_database"
REPLICA_DATABASE = "movielens_raw"
ANALYTICS_DATABASE = "analytics_movie_insights"
ANALYTICS_SCHEMA = "analytics"

# The storage stack's raw bucket is <project>-raw-<env>-<account>-<region> (unique on AWS); MWAA
# always sets [movielens] raw_bucket. The default is that name in the local stack's account
# (moto's default, 123456789012) and Region, as `make airflow` and docker compose create it.
DEFAULT_RAW_BUCKET = "data-handson-mds-raw-dev-123456789012-us-east-1"
# Where the dbt docs site is published, in the [movielens] dbt_docs_bucket.
DBT_DOCS_PREFIX = "dbt-docs"
DEFAULT_REGION = "us-east-1"
