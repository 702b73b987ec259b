#!/usr/bin/env bash
# Recreate the Aurora -> Redshift zero-ETL integration against a restored Aurora
# cluster (cloudformation/README.md, "Backup and recovery"). A point-in-time
# restore creates a NEW cluster: the old integration keeps replicating from the
# old one (or from nothing), so a new integration is needed from the restored
# cluster into the same Redshift namespace.
#
#   cloudformation/scripts/recreate_integration.sh --cluster <restored-cluster-id>            # checks, then refuses to delete
#   cloudformation/scripts/recreate_integration.sh --cluster <restored-cluster-id> --dry-run  # checks, prints what it would run
#   cloudformation/scripts/recreate_integration.sh --cluster <restored-cluster-id> --yes      # deletes the old one, creates, waits
#
# Steps: (a) the restored cluster is available, has a writer, and its cluster
# parameter group carries the four zero-ETL settings (applied: in-sync);
# (b) the old integration (into the same namespace, from --old-source) is
# deleted - only with --yes; (c) a new integration is created with the old
# one's DataFilter; (d) the script waits until it is active; (e) it prints
# the Redshift, MWAA and Airflow steps that follow.
# Re-runnable: an integration that already goes from the restored cluster to
# the namespace is reused (waited for), an old one already deleting is skipped.
#
# Options:
#   --cluster ID          the restored Aurora cluster (required)
#   --old-source ID       cluster the old integration replicates from
#                         (default <PROJECT_NAME>-aurora-<ENVIRONMENT_NAME>, the database stack's)
#   --old-integration ARN the integration to delete, instead of looking it up by --old-source
#   --target-arn ARN      Redshift namespace ARN (default: export <project>-<env>-RedshiftNamespaceArn)
#   --name NAME           new integration name (default <cluster>-zero-etl)
#   --data-filter FILTER  default: the old integration's DataFilter, else the template default
#   --yes                 allow deleting the old integration
#   --dry-run             run only the read calls; print the delete/create commands
#   --timeout-minutes N   how long to wait for "active" (default 60)
# Environment: PROJECT_NAME (data-handson-mds), ENVIRONMENT_NAME (dev), REPLICA_DATABASE
# (movielens_raw: the zero-ETL database the DAG creates, movielens_pipeline/names.py),
# POLL_SECONDS (30), AWS_REGION / AWS_PROFILE as usual. Needs AWS CLI v2 and
# rds:DescribeDBClusters, rds:DescribeDBClusterParameters, rds:DescribeIntegrations,
# rds:DeleteIntegration, rds:CreateIntegration, redshift:GetResourcePolicy,
# redshift:CreateInboundIntegration, cloudformation:ListExports.
set -euo pipefail

# Same default as IntegrationDataFilter in warehouse_integration.yaml (tested).
DEFAULT_DATA_FILTER="include: transactional.movielens_database.*"
# The DAG's name for the replica database (REPLICA_DATABASE in movielens_pipeline/names.py, tested).
DEFAULT_REPLICA_DATABASE="movielens_raw"
replica_database="${REPLICA_DATABASE:-$DEFAULT_REPLICA_DATABASE}"
ZERO_ETL_PARAMETERS=(
  rds.logical_replication=1
  aurora.enhanced_logical_replication=1
  aurora.logical_replication_backup=0
  aurora.logical_replication_globaldb=0
)

project="${PROJECT_NAME:-data-handson-mds}"
env_name="${ENVIRONMENT_NAME:-dev}"
poll_seconds="${POLL_SECONDS:-30}"
cluster="" old_source="${project}-aurora-${env_name}" old_integration="" target_arn=""
name="" data_filter="" yes=false dry_run=false timeout_minutes=60

die() { echo "recreate_integration.sh: $*" >&2; exit 1; }
usage() { sed -n '2,36p' "$0"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --cluster|--old-source|--old-integration|--target-arn|--name|--data-filter|--timeout-minutes)
      [[ $# -ge 2 && -n "$2" ]] || { echo "$1 needs a value (see --help)" >&2; exit 2; }
      case "$1" in
        --cluster) cluster="$2" ;;
        --old-source) old_source="$2" ;;
        --old-integration) old_integration="$2" ;;
        --target-arn) target_arn="$2" ;;
        --name) name="$2" ;;
        --data-filter) data_filter="$2" ;;
        --timeout-minutes) timeout_minutes="$2" ;;
      esac
      shift ;;
    --yes) yes=true ;;
    --dry-run) dry_run=true ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

[[ -n "$cluster" ]] || { echo "--cluster <restored-cluster-id> is required (see --help)" >&2; exit 2; }
# DB cluster identifier and integration name rules (RDS API).
id_re='^[a-zA-Z](-?[a-zA-Z0-9]+)*$'
[[ "$cluster" =~ $id_re && ${#cluster} -le 63 ]] || die "--cluster '${cluster}' is not a DB cluster identifier."
[[ "$cluster" != "$old_source" ]] \
  || die "--cluster is the old source (${old_source}): pass the RESTORED cluster's identifier" \
         "(if the restored cluster took the old name, pass --old-source <the old cluster's current name>)."
name="${name:-${cluster}-zero-etl}"
[[ "$name" =~ $id_re && ${#name} -le 63 ]] \
  || die "integration name '${name}' must be 1-63 letters, digits and single hyphens: pass --name."
[[ "$timeout_minutes" =~ ^[0-9]+$ ]] || die "--timeout-minutes must be a whole number."

# ------------------------------------------------------------- (a) the cluster
echo "==> checking restored cluster ${cluster}"
line="$(aws rds describe-db-clusters --db-cluster-identifier "$cluster" \
  --query "DBClusters[0].[Status, DBClusterArn, DBClusterParameterGroup, Endpoint, join(',', DBClusterMembers[?IsClusterWriter].DBClusterParameterGroupStatus) || 'none', join(',', AssociatedRoles[?FeatureName=='s3Import'].Status) || 'none']" \
  --output text)" || die "cannot describe DB cluster ${cluster} (name? AWS_REGION? credentials?)."
IFS=$'\t' read -r status cluster_arn parameter_group endpoint writer_sync s3_import <<<"$line"
[[ "$status" == available ]] \
  || die "cluster ${cluster} is '${status}', not available: wait (aws rds wait db-cluster-available --db-cluster-identifier ${cluster}) and re-run."
[[ "$writer_sync" != none ]] \
  || die "cluster ${cluster} has no writer instance: a restore creates none, add one (README, Backup and recovery, step 2) and re-run."
[[ "$writer_sync" == in-sync ]] \
  || die "the writer's cluster parameter group status is '${writer_sync}', not in-sync: reboot the writer (aws rds reboot-db-instance --db-instance-identifier <writer>) and re-run."

actual="$(aws rds describe-db-cluster-parameters \
  --db-cluster-parameter-group-name "$parameter_group" \
  --query "Parameters[?ParameterName=='rds.logical_replication' || ParameterName=='aurora.enhanced_logical_replication' || ParameterName=='aurora.logical_replication_backup' || ParameterName=='aurora.logical_replication_globaldb'].[ParameterName, ParameterValue]" \
  --output text)" || die "cannot read DB cluster parameter group ${parameter_group}."
rows=$'\n'"${actual//$'\t'/=}"$'\n'   # one name=value per line
for wanted in "${ZERO_ETL_PARAMETERS[@]}"; do
  [[ "$rows" == *$'\n'"${wanted}"$'\n'* ]] \
    || die "cluster ${cluster} uses parameter group ${parameter_group}, which does not set ${wanted}" \
           "(zero-ETL needs ${ZERO_ETL_PARAMETERS[*]}): restore with --db-cluster-parameter-group-name <the database stack's group>," \
           "or modify the cluster to use it and reboot the writer."
done
if [[ "$s3_import" != ACTIVE ]]; then
  echo "WARNING: no active s3Import role on ${cluster} (${s3_import}); the load DAG's aws_s3.table_import_from_s3 needs it:" >&2
  echo "  aws rds add-role-to-db-cluster --db-cluster-identifier ${cluster} --feature-name s3Import --role-arn <S3ImportRoleArn output of the database stack>" >&2
fi
echo "    ${cluster_arn}: available, writer in-sync, parameter group ${parameter_group} has the zero-ETL settings"

# -------------------------------------------------------------- the namespace
if [[ -z "$target_arn" ]]; then
  export_name="${project}-${env_name}-RedshiftNamespaceArn"
  target_arn="$(aws cloudformation list-exports \
    --query "Exports[?Name=='${export_name}'].Value" --output text)" \
    || die "cannot list CloudFormation exports; pass --target-arn."
  [[ -n "$target_arn" && "$target_arn" != None ]] \
    || die "export ${export_name} not found (warehouse_integration stack deployed?); pass --target-arn."
fi
echo "==> target namespace ${target_arn}"
# The namespace resource policy must authorise the restored cluster as a source.
if policy="$(aws redshift get-resource-policy --resource-arn "$target_arn" \
               --query ResourcePolicy.Policy --output text 2>/dev/null)"; then
  [[ "$policy" == *"\"${cluster_arn}\""* ]] \
    || die "the namespace resource policy does not authorise ${cluster_arn} as an integration source. Run:" \
           "cloudformation/deploy.sh --only warehouse_integration -- RecoverySourceClusterArn=${cluster_arn}   and re-run."
else
  echo "WARNING: could not read the namespace resource policy; it must authorise ${cluster_arn}" \
       "(deploy.sh --only warehouse_integration -- RecoverySourceClusterArn=${cluster_arn})." >&2
fi

# ------------------------------------------------------- integrations present
old_source_arn="${cluster_arn%:*}:${old_source}"
new_arn="" new_status="" old_arn="" old_status="" old_filter=""
listing="$(aws rds describe-integrations \
  --query "Integrations[?TargetArn=='${target_arn}'].[IntegrationArn, SourceArn, Status, IntegrationName, DataFilter]" \
  --output text)" || die "cannot list zero-ETL integrations."
while IFS=$'\t' read -r arn source state iname filter; do
  [[ -n "$arn" && "$arn" != None ]] || continue
  if [[ "$source" == "$cluster_arn" ]]; then
    new_arn="$arn" new_status="$state"
    echo "    found ${iname} ${arn} from the restored cluster (${state}): reused"
  elif [[ -n "$old_integration" && "$arn" == "$old_integration" ]] \
       || [[ -z "$old_integration" && "$source" == "$old_source_arn" ]]; then
    old_arn="$arn" old_status="$state" old_filter="$filter"
    echo "    found ${iname} ${arn} from ${source} (${state}): the old integration"
  fi
done <<<"$listing"
if [[ -n "$old_integration" && -z "$old_arn" ]]; then
  die "--old-integration ${old_integration} does not target ${target_arn} (or does not exist)."
fi
if [[ -z "$data_filter" ]]; then
  if [[ -n "$old_filter" && "$old_filter" != None ]]; then data_filter="$old_filter"; else data_filter="$DEFAULT_DATA_FILTER"; fi
fi

# ------------------------------------------------- (b) delete the old one
if [[ -z "$old_arn" ]]; then
  echo "==> no old integration from ${old_source} into the namespace: nothing to delete"
elif [[ "$old_status" == deleting ]]; then
  echo "==> old integration ${old_arn} is already deleting"
else
  case "$old_status" in
    active|failed|syncing|needs_attention) ;;
    *) die "old integration ${old_arn} is '${old_status}'; it can be deleted only when active, failed, syncing or needs_attention: wait and re-run." ;;
  esac
  if $dry_run; then
    echo "DRY RUN, would run: aws rds delete-integration --integration-identifier ${old_arn}"
  elif ! $yes; then
    die "refusing to delete the old integration ${old_arn} (${old_status}) without --yes." \
        "Deleting it stops replication from ${old_source}; Redshift keeps the data already in ${replica_database}." \
        "Re-run with --yes, or delete it yourself: aws rds delete-integration --integration-identifier ${old_arn}"
  else
    echo "==> deleting old integration ${old_arn}"
    aws rds delete-integration --integration-identifier "$old_arn" \
      --query Status --output text >/dev/null \
      || die "delete-integration ${old_arn} failed (see above)."
  fi
fi

# --------------------------------------------------------- (c) create the new one
description="MovieLens: Aurora ${cluster} (restored) to the ${project}-${env_name} Redshift namespace"
if [[ -n "$new_arn" ]]; then
  echo "==> integration from ${cluster} exists: ${new_arn} (${new_status})"
elif $dry_run; then
  echo "DRY RUN, would run: aws rds create-integration --source-arn ${cluster_arn} --target-arn ${target_arn}" \
       "--integration-name ${name} --data-filter '${data_filter}' --description '${description}'" \
       "--tags Key=Project,Value=${project} Key=Environment,Value=${env_name}"
  echo "dry run: nothing changed."
  exit 0
else
  echo "==> creating integration ${name} (DataFilter '${data_filter}')"
  new_arn="$(aws rds create-integration \
    --source-arn "$cluster_arn" \
    --target-arn "$target_arn" \
    --integration-name "$name" \
    --data-filter "$data_filter" \
    --description "$description" \
    --tags "Key=Project,Value=${project}" "Key=Environment,Value=${env_name}" \
    --query IntegrationArn --output text)" || die "create-integration failed (see above)."
  new_status=creating
fi
if $dry_run; then
  echo "dry run: nothing changed."
  exit 0
fi

# --------------------------------------------------------- (d) wait for active
deadline=$(( $(date +%s) + timeout_minutes * 60 ))
while [[ "$new_status" != active ]]; do
  case "$new_status" in
    failed|needs_attention)
      errors="$(aws rds describe-integrations --integration-identifier "$new_arn" \
        --query "Integrations[0].Errors[].[ErrorCode, ErrorMessage]" --output text || true)"
      die "integration ${new_arn} is ${new_status}: ${errors:-no error detail}." \
          "Fix the cause (Aurora zero-ETL troubleshooting guide), delete it and re-run." ;;
  esac
  if (( $(date +%s) >= deadline )); then
    die "integration ${new_arn} is still '${new_status}' after ${timeout_minutes} min; re-run this script to keep waiting" \
        "(creation usually takes 20-30 min)."
  fi
  echo "    ${new_arn}: ${new_status}, waiting ${poll_seconds}s"
  sleep "$poll_seconds"
  new_status="$(aws rds describe-integrations --integration-identifier "$new_arn" \
    --query "Integrations[0].Status" --output text)" || die "cannot describe ${new_arn}."
done

# --------------------------------------------------------- (e) what comes next
integration_id="${new_arn##*:}"
cat <<EOF
==> integration ${new_arn} is active (id ${integration_id}).

Next:
 1. Redshift: ${replica_database} still belongs to the old integration and stays stale.
    As a superuser on the warehouse (the movielens_redshift connection's user):
      DROP DATABASE ${replica_database};
    (the transform DAG then runs: CREATE DATABASE ${replica_database} FROM INTEGRATION '${integration_id}' DATABASE 'transactional';)
 2. Airflow option movielens.integration_arn (and the IAM grants that follow it):
      PROJECT_NAME=${project} ENVIRONMENT_NAME=${env_name} cloudformation/deploy.sh --only mwaa -- IntegrationArnOverride=${new_arn}
      PROJECT_NAME=${project} ENVIRONMENT_NAME=${env_name} cloudformation/deploy.sh --only operations -- IntegrationArnOverride=${new_arn}
 3. Point the secret airflow/${project}-${env_name}/connections/movielens_aurora at the restored writer: "host": "${endpoint}".
 4. Trigger dag_dbt_movielens_zeroetl_cosmos: its bootstrap task recreates ${replica_database}
    FROM INTEGRATION (idempotent) and waits until the tables are Synced.
EOF
