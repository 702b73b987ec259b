#!/usr/bin/env bash
# Stop paying for what can be stopped in the deployed estate, and start it again
# (docs/cost.md; cloudformation/README.md, "Cost notes" and "Teardown").
#
#   cloudformation/scripts/pause_resume.sh pause  [--dry-run]   # make pause
#   cloudformation/scripts/pause_resume.sh resume [--dry-run]   # make resume
#
# pause:  stops the Aurora cluster (instance hours end; storage and backups still
#         bill; AWS starts it again by itself after seven days), pauses a
#         provisioned Redshift cluster (node hours end; storage still bills) and
#         stops the operator host (EBS still bills).
# resume: starts what pause stopped.
# Nothing to do, and said so: Redshift Serverless (no compute billed while no
# query runs). Cannot be paused, and said so: the MWAA environment (it bills every
# hour until it is deleted), the NAT gateway, secrets, the KMS key and alarms.
# Pause the two DAGs in Airflow first: scheduled runs against a stopped Aurora fail.
# Re-runnable: a resource already in the wanted state is left alone; one in
# another state (creating, modifying, ...) is reported and left alone.
#
# Names come from the stacks' exports and outputs, so PROJECT_NAME /
# ENVIRONMENT_NAME (data-handson-mds / dev) must be the deploy's. AWS_REGION /
# AWS_PROFILE as usual. Needs cloudformation:ListExports, DescribeStacks,
# rds:DescribeDBClusters, StopDBCluster, StartDBCluster, redshift:DescribeClusters,
# PauseCluster, ResumeCluster, ec2:DescribeInstances, StopInstances, StartInstances.
set -euo pipefail

project="${PROJECT_NAME:-data-handson-mds}"
env_name="${ENVIRONMENT_NAME:-dev}"
prefix="${project}-${env_name}"
action="" dry_run=false

die() { echo "pause_resume.sh: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    pause|resume) [[ -z "$action" ]] || { echo "one of pause / resume" >&2; exit 2; }; action="$1" ;;
    --dry-run) dry_run=true ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$action" ]] || { echo "pause or resume? (see --help)" >&2; exit 2; }

# The changing calls go through act: --dry-run prints them instead.
act() {
  if $dry_run; then echo "would run: $*"; else echo "running: $*"; "$@" >/dev/null; fi
}
export_value() {
  local value
  value="$(aws cloudformation list-exports --query "Exports[?Name=='$1'].Value" --output text)" \
    || die "cannot list CloudFormation exports (credentials? AWS_REGION?)"
  [[ "$value" == None ]] && value=""
  echo "$value"
}
stack_output() {  # empty when the stack or the output does not exist
  local value
  value="$(aws cloudformation describe-stacks --stack-name "$1" \
    --query "Stacks[0].Outputs[?OutputKey=='$2'].OutputValue" --output text 2>/dev/null)" || value=""
  [[ "$value" == None ]] && value=""
  echo "$value"
}

# ------------------------------------------------------------------ Aurora
cluster="$(export_value "${prefix}-AuroraClusterId")"
[[ -n "$cluster" ]] || die "no export ${prefix}-AuroraClusterId: is the database stack deployed?"
status="$(aws rds describe-db-clusters --db-cluster-identifier "$cluster" \
  --query "DBClusters[0].Status" --output text)" || die "cannot describe Aurora cluster ${cluster}"
if [[ "$action" == pause && "$status" == available ]]; then
  act aws rds stop-db-cluster --db-cluster-identifier "$cluster"
  echo "Aurora ${cluster}: stopping. Storage and backups still bill; AWS starts it again after" \
       "seven days (describe-db-clusters AutomaticRestartTime): run this again then." \
       "Zero-ETL: the last few transactions may reach Redshift only after the resume."
elif [[ "$action" == resume && "$status" == stopped ]]; then
  act aws rds start-db-cluster --db-cluster-identifier "$cluster"
  echo "Aurora ${cluster}: starting (about 5-10 minutes); the integration catches up by itself."
elif [[ "$action" == pause && "$status" == stopped || "$action" == resume && "$status" == available ]]; then
  echo "Aurora ${cluster}: already ${status}."
else
  echo "Aurora ${cluster}: ${status}, left alone (run again once it is available or stopped)."
fi

# ---------------------------------------------------------------- Redshift
kind="$(stack_output "${prefix}-warehouse-integration" RedshiftWarehouseKind)"
warehouse="$(export_value "${prefix}-RedshiftWarehouseName")"
if [[ "$kind" == provisioned ]]; then
  status="$(aws redshift describe-clusters --cluster-identifier "$warehouse" \
    --query "Clusters[0].ClusterStatus" --output text)" || die "cannot describe Redshift cluster ${warehouse}"
  if [[ "$action" == pause && "$status" == available ]]; then
    act aws redshift pause-cluster --cluster-identifier "$warehouse"
    echo "Redshift ${warehouse}: pausing. Node hours end; managed storage still bills."
  elif [[ "$action" == resume && "$status" == paused ]]; then
    act aws redshift resume-cluster --cluster-identifier "$warehouse"
    echo "Redshift ${warehouse}: resuming (a few minutes)."
  else
    echo "Redshift ${warehouse}: ${status}, left alone."
  fi
elif [[ -n "$warehouse" ]]; then
  echo "Redshift Serverless ${warehouse}: nothing to ${action}. Compute bills only while queries" \
       "run (RPU-seconds, 60 s minimum); managed storage always."
fi

# ----------------------------------------------------------- operator host
instance="$(stack_output "${prefix}-operations" OperatorInstanceId)"
if [[ -n "$instance" ]]; then
  state="$(aws ec2 describe-instances --instance-ids "$instance" \
    --query "Reservations[0].Instances[0].State.Name" --output text)" || die "cannot describe ${instance}"
  if [[ "$action" == pause && "$state" == running ]]; then
    act aws ec2 stop-instances --instance-ids "$instance"
    echo "Operator host ${instance}: stopping. Its 20 GiB volume still bills."
  elif [[ "$action" == resume && "$state" == stopped ]]; then
    act aws ec2 start-instances --instance-ids "$instance"
    echo "Operator host ${instance}: starting."
  else
    echo "Operator host ${instance}: ${state}, left alone."
  fi
fi

# --------------------------------------------------- what cannot be paused
mwaa="$(export_value "${prefix}-MwaaEnvironmentName")"
if [[ -n "$mwaa" && "$action" == pause ]]; then
  echo "MWAA ${mwaa}: cannot be paused; it bills every hour until it is deleted. To stop that:" \
       "delete the stacks ${prefix}-operations, then ${prefix}-mwaa (operations imports its export)." \
       "Lost: the metadata database (DAG run and task history, XComs, Dataset events, UI users)." \
       "Kept: the bucket, the secrets, the CloudWatch log groups. Back:" \
       "cloudformation/deploy.sh --from mwaa (about 25-30 minutes)."
fi
if [[ "$action" == pause ]]; then
  echo "Still billing: the NAT gateway and its address, secrets, the KMS key, alarms, S3 (make cost)."
fi
