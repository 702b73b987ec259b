#!/usr/bin/env bash
# Deploy (or preview) the MovieLens estate: one CloudFormation stack per
# template, in dependency order, each through `aws cloudformation deploy`
# (which creates a change set and, unless --dry-run, executes it).
#
#   cloudformation/deploy.sh                 # deploy all six stacks
#   cloudformation/deploy.sh --dry-run       # create change sets, print them, execute nothing
#   cloudformation/deploy.sh --only mwaa     # one stack
#   cloudformation/deploy.sh -- AlarmEmail=ops@example.com DeletionProtection=false
#
# Environment: PROJECT_NAME (data-handson-mds), ENVIRONMENT_NAME (dev),
# AWS_REGION / AWS_PROFILE as usual for the AWS CLI.
# Overrides after `--` go to every stack; `aws cloudformation deploy` keeps only
# the ones a template declares.
#
# Before the mwaa stack the MWAA bucket must hold requirements.txt, plugins.zip
# and startup.sh (MWAA refuses to create an environment pointing at missing
# objects); this script reads their current S3 version ids and pins them.
set -euo pipefail

STACKS=(network storage database warehouse_integration mwaa operations)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="${PROJECT_NAME:-data-handson-mds}"
env_name="${ENVIRONMENT_NAME:-dev}"
dry_run=false
only=""
overrides=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=true ;;
    --only) only="$2"; shift ;;
    --) shift; overrides+=("$@"); break ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

mwaa_object_versions() {
  local bucket="${project}-mwaa-${env_name}" key param version
  for pair in plugins.zip:PluginsS3ObjectVersion requirements.txt:RequirementsS3ObjectVersion \
              startup.sh:StartupScriptS3ObjectVersion; do
    key="${pair%%:*}"; param="${pair##*:}"
    if ! version="$(aws s3api head-object --bucket "$bucket" --key "$key" --query VersionId --output text 2>/dev/null)"; then
      echo "s3://${bucket}/${key} is missing: upload the MWAA bundle before the mwaa stack." >&2
      return 1
    fi
    echo "${param}=${version}"
  done
}

for stack in "${STACKS[@]}"; do
  [[ -n "$only" && "$only" != "$stack" ]] && continue
  stack_name="${project}-${env_name}-${stack//_/-}"
  params=("ProjectName=${project}" "EnvironmentName=${env_name}")
  if [[ "$stack" == mwaa ]]; then
    mapfile -t versions < <(mwaa_object_versions)
    params+=("${versions[@]}")
  fi
  params+=("${overrides[@]}")

  args=(cloudformation deploy
        --stack-name "$stack_name"
        --template-file "${here}/${stack}.yaml"
        --capabilities CAPABILITY_IAM
        --no-fail-on-empty-changeset
        --tags "Project=${project}" "Environment=${env_name}"
        --parameter-overrides "${params[@]}")
  if $dry_run; then
    args+=(--no-execute-changeset)
  fi
  echo "==> ${stack_name} (${stack}.yaml)${dry_run:+ dry-run=${dry_run}}"
  aws "${args[@]}"
done
