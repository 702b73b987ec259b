#!/usr/bin/env bash
# One-time (idempotent) Aurora bootstrap, run on the operator host through SSM:
#
#   aws ssm start-session --target <OperatorInstanceId>
#   PROJECT_NAME=data-handson-mds ENVIRONMENT_NAME=dev bash bootstrap_aurora_app_user.sh
#
# Why: the master password is generated and rotated by RDS
# (ManageMasterUserPassword), so CloudFormation cannot copy it into the Airflow
# connection. The stack instead generates a password for a dedicated
# application user in airflow/<project>-<env>/connections/movielens_aurora; this script creates
# that role inside Aurora with that password, and installs aws_s3 (which needs
# rds_superuser) so the load DAG can call aws_s3.table_import_from_s3.
# Re-run it after changing the connection secret's password.
#
# Needs: aws CLI, psql (postgresql16), jq; the operator role may read both secrets.
set -euo pipefail

project="${PROJECT_NAME:-data-handson-mds}"
env_name="${ENVIRONMENT_NAME:-dev}"
cluster_id="${project}-aurora-${env_name}"
master_secret_arn="$(aws rds describe-db-clusters --db-cluster-identifier "$cluster_id" \
  --query 'DBClusters[0].MasterUserSecret.SecretArn' --output text)"
app_secret_arn="airflow/${project}-${env_name}/connections/movielens_aurora"  # pragma: allowlist secret - its name
master_json="$(aws secretsmanager get-secret-value --secret-id "$master_secret_arn" --query SecretString --output text)"
app_json="$(aws secretsmanager get-secret-value --secret-id "$app_secret_arn" --query SecretString --output text)"

host="$(jq -r .host <<<"$app_json")"
port="$(jq -r .port <<<"$app_json")"
dbname="$(jq -r .schema <<<"$app_json")"

export PGHOST="$host" PGPORT="$port" PGDATABASE="$dbname" PGSSLMODE=require
PGUSER="$(jq -r .username <<<"$master_json")"
PGPASSWORD="$(jq -r .password <<<"$master_json")"
export PGUSER PGPASSWORD

# Passwords travel on stdin (psql variables), never on a command line.
psql -v ON_ERROR_STOP=1 -q <<SQL
\set app_user '$(jq -r .login <<<"$app_json")'
\set app_password '$(jq -r .password <<<"$app_json")'
\set dbname '${dbname}'
SELECT format('CREATE ROLE %I LOGIN', :'app_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app_user') \gexec
ALTER ROLE :"app_user" WITH LOGIN PASSWORD :'app_password';
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE :"dbname" TO :"app_user";
CREATE EXTENSION IF NOT EXISTS aws_s3 CASCADE;
GRANT USAGE ON SCHEMA aws_s3, aws_commons TO :"app_user";
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA aws_s3, aws_commons TO :"app_user";
SQL
echo "Aurora role $(jq -r .login <<<"$app_json") ready on ${host}/${dbname}; aws_s3 installed."
