"""The names every hop agrees on, declared once (the README's glossary explains them).

- source: Aurora PostgreSQL, database ``transactional``, where the application writes.
- replica: the tables zero-ETL replicates; on Redshift the read-only database
  ``movielens_raw``, locally the same schema inside the warehouse database.
- warehouse: the Redshift cluster or workgroup (locally a second PostgreSQL server).
- analytics: the ``analytics_movie_insights`` database that dbt builds.
"""

LOAD_DAG_ID = "dag_movielens_load_aurora"
TRANSFORM_DAG_ID = "dag_dbt_movielens_zeroetl_cosmos"

# The task ids that tools, tests and docs refer to (a decorated task's id is its function's).
STAGE_CSVS_TASK_ID = "stage_csvs_in_s3"
CREATE_TABLES_TASK_ID = "create_aurora_tables"
LOAD_TABLE_TASK_ID = "load_aurora_table"
PUBLISH_TABLES_TASK_ID = "publish_aurora_tables"
BOOTSTRAP_TASK_ID = "bootstrap_zero_etl_target"
CATCH_UP_TASK_ID = "wait_for_zero_etl_catch_up"
RECONCILE_TASK_ID = "reconcile_replica_counts"
ANALYTICS_DATABASE_TASK_ID = "ensure_analytics_database"
SUMMARY_TASK_ID = "summarize_run"
DBT_DOCS_TASK_ID = "publish_dbt_docs"
# The task group Cosmos renders the dbt project into: its tasks are "dbt_movielens.<node>".
DBT_TASK_GROUP_ID = "dbt_movielens"
# The dbt project's name and its profile's (dbt/movielens_redshift/dbt_project.yml).
DBT_PROJECT_NAME = "movielens_redshift"

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
