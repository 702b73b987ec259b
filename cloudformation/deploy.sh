#!/usr/bin/env bash
# Deploy (or preview) the MovieLens estate: one CloudFormation stack per
# template, in dependency order, each through `aws cloudformation deploy`
# (which creates a change set and, unless --dry-run, executes it).
#
#   cloudformation/deploy.sh                 # deploy all six stacks
#   cloudformation/deploy.sh --dry-run       # create change sets, print them, execute nothing
#   cloudformation/deploy.sh --only mwaa     # one stack
#   cloudformation/deploy.sh --to storage    # network and storage (then `make deploy`)
#   cloudformation/deploy.sh --from database # database and every stack after it
#   cloudformation/deploy.sh -- AlarmEmail=ops@example.com DeletionProtection=false
#   cloudformation/deploy.sh --parameters cloudformation/parameters/trial.params  # Key=Value lines
#
# Environment: PROJECT_NAME (data-handson-mds), ENVIRONMENT_NAME (dev),
# AWS_REGION / AWS_PROFILE as usual for the AWS CLI.
# Overrides after `--` go to every stack; `aws cloudformation deploy` keeps only
# the ones a template declares. ProjectName/EnvironmentName are set from the
# environment variables above (they name the stacks and the exports).
#
# Before each stack the script checks that every export the template imports
# (Fn::ImportValue) exists. If one is missing, a deploy stops and names the
# stacks to deploy first; a --dry-run skips that stack, previews the others and
# lists the skipped ones at the end (on a fresh account only network and
# storage can be previewed: the rest import exports of stacks never executed).
#
# Before the mwaa stack the MWAA bucket (the storage stack's MwaaBucketName
# export) must hold requirements.txt, plugins.zip and startup.sh (MWAA refuses to
# create an environment pointing at missing objects); this script reads their
# current S3 version ids and pins them. Each object carries the Airflow version
# the bundle was built for (S3 metadata airflow-version, written by `make deploy`):
# it must equal the AirflowVersion the stack gets (AirflowVersion=... after `--`,
# else the template default), and so must the version of an existing environment
# (aws mwaa get-environment), unless ALLOW_AIRFLOW_VERSION_CHANGE=true (a change MWAA
# makes in place; a major one only between 2.11.x and 3.x: cloudformation/README.md).
set -euo pipefail

STACKS=(network storage database warehouse_integration mwaa operations)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="${PROJECT_NAME:-data-handson-mds}"
env_name="${ENVIRONMENT_NAME:-dev}"
dry_run=false
only="" from_stack="" to_stack=""
overrides=() file_overrides=()

die() { echo "deploy.sh: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=true ;;
    --only|--from|--to)
      [[ $# -ge 2 ]] || { echo "$1 needs a stack: ${STACKS[*]}" >&2; exit 2; }
      case "$1" in
        --only) only="${2//-/_}" ;;
        --from) from_stack="${2//-/_}" ;;
        --to) to_stack="${2//-/_}" ;;
      esac
      shift ;;
    --parameters)  # Key=Value lines (blank and # lines skipped) before any after `--`
      [[ $# -ge 2 && -f "$2" ]] || { echo "--parameters needs a Key=Value file" >&2; exit 2; }
      while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line#"${line%%[![:space:]]*}"}" line="${line%"${line##*[![:space:]]}"}"
        [[ -z "$line" || "$line" == \#* ]] || file_overrides+=("$line")
      done <"$2"
      shift ;;
    --) shift; overrides+=("$@"); break ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

for pair in "--only:${only}" "--from:${from_stack}" "--to:${to_stack}"; do
  name="${pair#*:}"
  if [[ -n "$name" && " ${STACKS[*]} " != *" ${name} "* ]]; then
    echo "${pair%%:*} ${name}: no such stack; choose one of: ${STACKS[*]}" >&2
    exit 2
  fi
done
if [[ -n "$only" ]]; then
  [[ -z "$from_stack$to_stack" ]] || { echo "--only cannot be combined with --from/--to" >&2; exit 2; }
  from_stack="$only" to_stack="$only"
fi
index_of() { local i; for i in "${!STACKS[@]}"; do [[ "${STACKS[$i]}" != "$1" ]] || echo "$i"; done; }
first=$(index_of "${from_stack:-${STACKS[0]}}") last=$(index_of "${to_stack:-${STACKS[-1]}}")
if (( first > last )); then
  echo "--from ${from_stack} comes after --to ${to_stack} (order: ${STACKS[*]})" >&2
  exit 2
fi
# A parameter file's values come first: `aws cloudformation deploy` keeps the last of a key.
overrides=(${file_overrides[@]+"${file_overrides[@]}"} ${overrides[@]+"${overrides[@]}"})
for o in ${overrides[@]+"${overrides[@]}"}; do
  case "$o" in
    ProjectName=*|EnvironmentName=*)
      echo "${o%%=*} cannot be overridden after --: set PROJECT_NAME / ENVIRONMENT_NAME" \
           "(they also name the stacks and exports)." >&2
      exit 2 ;;
    *=*) ;;
    *) echo "override '${o}' is not Key=Value" >&2; exit 2 ;;
  esac
done

# The names must pass the templates' own patterns (one per name, the same in every template):
# CloudFormation would refuse them only at the first stack. Their lengths keep every S3 bucket
# name within 63 characters (storage.yaml).
for pair in "ProjectName:PROJECT_NAME:${project}" "EnvironmentName:ENVIRONMENT_NAME:${env_name}"; do
  param="${pair%%:*}" rest="${pair#*:}"
  pattern="$(sed -n "/^  ${param}:/,/^  [A-Za-z]/s/^    AllowedPattern: \"\(.*\)\"$/\1/p" \
               "${here}/storage.yaml")"
  if [[ -z "$pattern" || ! "${rest#*:}" =~ ^(${pattern})$ ]]; then
    echo "${rest%%:*}=${rest#*:} does not fit ${param}'s pattern ${pattern} in the templates:" \
         "with the account id and the Region it names the S3 buckets, which S3 limits to 63" \
         "characters (cloudformation/storage.yaml)." >&2
    exit 2
  fi
done

# Export names a template imports / exports, resolved for this project and
# environment. The templates write both as !Sub "${ProjectName}-${EnvironmentName}-X".
resolve() { local s; while IFS= read -r s; do
  s="${s//\$\{ProjectName\}/$project}"; echo "${s//\$\{EnvironmentName\}/$env_name}"; done; }
imports_of() {
  { grep -oE 'ImportValue:? +!Sub +"[^"]+"' "${here}/$1.yaml" || true; } \
    | sed -E 's/.*"([^"]+)"/\1/' | resolve | sort -u
}
exports_of() {
  { grep -A1 -E '^ +Export:' "${here}/$1.yaml" | grep -oE 'Name: +!Sub +"[^"]+"' || true; } \
    | sed -E 's/.*"([^"]+)"/\1/' | resolve | sort -u
}
stack_exporting() {  # template that exports $1
  local s; for s in "${STACKS[@]}"; do
    if exports_of "$s" | grep -qxF -- "$1"; then echo "$s"; return; fi
  done
  echo "no template"
}

existing_exports() {
  local out
  out="$(aws cloudformation list-exports --query 'Exports[].Name' --output text)" \
    || die "cannot list CloudFormation exports (credentials? AWS_REGION?); nothing deployed from here on."
  tr '\t ' '\n\n' <<<"$out" | grep -vxE 'None|' || true
}

# The value of an export of this project and environment (blank if it does not exist).
export_value() {
  aws cloudformation list-exports --query "Exports[?Name=='${project}-${env_name}-$1'].Value" \
    --output text
}

# The AirflowVersion the mwaa stack will get: the last override, else the template default.
target_airflow_version() {
  local o version=""
  for o in ${overrides[@]+"${overrides[@]}"}; do
    [[ "$o" != AirflowVersion=* ]] || version="${o#*=}"
  done
  [[ -z "$version" ]] || { echo "$version"; return; }
  sed -n '/^  AirflowVersion:/,/^  [A-Za-z]/s/^    Default: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "${here}/mwaa.yaml"
}

# Pins the bundle's object versions (Key=VersionId lines) after checking that each object is
# there, versioned, and built for the target Airflow version.
mwaa_object_versions() {
  local bucket="$1" target="$2" key param answer version built err
  for pair in plugins.zip:PluginsS3ObjectVersion requirements.txt:RequirementsS3ObjectVersion \
              startup.sh:StartupScriptS3ObjectVersion; do
    key="${pair%%:*}"; param="${pair##*:}"
    if ! answer="$(aws s3api head-object --bucket "$bucket" --key "$key" \
                     --query '[VersionId, Metadata."airflow-version"]' --output text \
                     2>"${tmp}/head-object.err")"; then
      err="$(tr '\n' ' ' <"${tmp}/head-object.err")"
      echo "s3://${bucket}/${key} is missing or unreadable${err:+ (${err% })}:" \
           "upload the MWAA bundle (make deploy MWAA_BUCKET=${bucket}) before the mwaa stack." >&2
      return 1
    fi
    read -r version built <<<"$answer"
    if [[ -z "$version" || "$version" == None ]]; then
      echo "s3://${bucket}/${key} has no version id: the mwaa stack pins object versions," \
           "so the bucket must be versioned (storage stack) before the bundle is uploaded." >&2
      return 1
    fi
    if [[ "${built:-None}" != "$target" ]]; then
      if [[ "${built:-None}" == None ]]; then
        echo "s3://${bucket}/${key} does not say which Airflow version it was built for" \
             "(no airflow-version metadata); the mwaa stack will get AirflowVersion ${target}." >&2
      else
        echo "s3://${bucket}/${key} was built for Airflow ${built}; the mwaa stack will get" \
             "AirflowVersion ${target}." >&2
      fi
      echo "Upload the bundle for ${target} (make deploy MWAA_BUCKET=${bucket} AIRFLOW_TARGET=${target})," \
           "or deploy the version the bundle was built for (-- AirflowVersion=<that version>)." >&2
      return 1
    fi
    echo "${param}=${version}"
  done
}

# An existing environment must already run the target version: a bundle for another Airflow
# fails on it (constraints, wheels for another Python). Upgrading in place is a decision.
check_environment_version() {
  local name="${project}-${env_name}" target="$1" running
  if ! running="$(aws mwaa get-environment --name "$name" --query Environment.AirflowVersion \
                    --output text 2>"${tmp}/get-environment.err")"; then
    grep -q ResourceNotFoundException "${tmp}/get-environment.err" && return 0
    echo "cannot read MWAA environment ${name}: $(tr '\n' ' ' <"${tmp}/get-environment.err")" >&2
    return 1
  fi
  [[ "$running" == "$target" ]] && return 0
  # MWAA "Changing the Apache Airflow version": a major version changes in place only from the
  # latest 2.11.x to 3.x, and back from 3.x to 2.11.x; from 2.10.3 and earlier, Airflow 3 takes
  # a new environment. The update would fail in MWAA after the stack started it.
  if [[ "${running%%.*}" != "${target%%.*}" && ! ( "$running" == 2.11.* && "$target" == 3.* ) \
        && ! ( "$running" == 3.* && "$target" == 2.11.* ) ]]; then
    echo "MWAA environment ${name} runs Airflow ${running}; MWAA changes the major version in place" \
         "only between the latest 2.11 and 3.x, so not to ${target} (ALLOW_AIRFLOW_VERSION_CHANGE" \
         "does not change that). Either upgrade to 2.11.0 first (make deploy AIRFLOW_TARGET=2.11.0," \
         "then ALLOW_AIRFLOW_VERSION_CHANGE=true cloudformation/deploy.sh --only mwaa --" \
         "AirflowVersion=2.11.0), then the same for ${target}; or create a new environment for" \
         "${target} (another ENVIRONMENT_NAME) and move to it (README, \"Airflow versions\")." >&2
    return 1
  fi
  if [[ "${ALLOW_AIRFLOW_VERSION_CHANGE:-false}" == true ]]; then
    echo "==> MWAA environment ${name}: Airflow ${running} -> ${target} (ALLOW_AIRFLOW_VERSION_CHANGE=true)" >&2
    return 0
  fi
  echo "MWAA environment ${name} runs Airflow ${running}; the mwaa stack and its bundle are for ${target}." \
       "Deploy -- AirflowVersion=${running} with a bundle built for it (make deploy AIRFLOW_TARGET=${running})," \
       "or, for an upgrade MWAA supports in place (cloudformation/README.md, \"Airflow versions\")," \
       "re-run with ALLOW_AIRFLOW_VERSION_CHANGE=true." >&2
  return 1
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

previewed=() skipped=() deployed=()
for index in "${!STACKS[@]}"; do
  stack="${STACKS[$index]}"
  (( index < first || index > last )) && continue
  stack_name="${project}-${env_name}-${stack//_/-}"
  label="${stack_name} (${stack}.yaml)"

  # Fn::ImportValue of an export that does not exist fails the change set.
  mapfile -t wanted < <(imports_of "$stack")
  if [[ ${#wanted[@]} -gt 0 ]]; then
    existing_exports >"${tmp}/exports"
    missing=() needs=()
    for export in "${wanted[@]}"; do
      grep -qxF -- "$export" "${tmp}/exports" && continue
      missing+=("$export")
      provider="$(stack_exporting "$export")"
      [[ " ${needs[*]-} " == *" ${provider} "* ]] || needs+=("$provider")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
      msg="${label} imports ${missing[*]}, not exported in this account/region yet."
      msg+=" Deploy (execute, not --dry-run) ${needs[*]} first: cloudformation/deploy.sh --only ${needs[0]}"
      if $dry_run; then
        echo "==> SKIP ${msg}" >&2
        skipped+=("${stack} (needs ${needs[*]})")
        continue
      fi
      die "${msg}"
    fi
  fi

  params=("ProjectName=${project}" "EnvironmentName=${env_name}")
  if [[ "$stack" == mwaa ]]; then
    bucket="$(export_value MwaaBucketName)" \
      || die "${label}: cannot read the export ${project}-${env_name}-MwaaBucketName."
    [[ -n "$bucket" && "$bucket" != None ]] \
      || die "${label}: no export ${project}-${env_name}-MwaaBucketName: deploy storage first."
    target="$(target_airflow_version)"
    versions_text="$(mwaa_object_versions "$bucket" "$target")" \
      || die "${label}: not deployed, the MWAA bundle is incomplete or for another Airflow (see above)."
    check_environment_version "$target" \
      || die "${label}: not deployed, the environment runs another Airflow version (see above)."
    mapfile -t versions <<<"$versions_text"
    params+=("${versions[@]}")
  fi
  params+=(${overrides[@]+"${overrides[@]}"})

  args=(cloudformation deploy
        --stack-name "$stack_name"
        --template-file "${here}/${stack}.yaml"
        # The templates create IAM roles/instance profiles; NAMED_IAM also covers
        # ones given explicit names (RoleName, InstanceProfileName, ...).
        --capabilities CAPABILITY_IAM CAPABILITY_NAMED_IAM
        --no-fail-on-empty-changeset
        --tags "Project=${project}" "Environment=${env_name}"
        --parameter-overrides "${params[@]}")
  if $dry_run; then
    args+=(--no-execute-changeset)
    echo "==> ${label}: change set only (dry run)"
  else
    echo "==> ${label}"
  fi
  if ! aws "${args[@]}"; then
    die "${label} failed. Inspect: aws cloudformation describe-stack-events --stack-name ${stack_name}" \
        "(a stack left in ROLLBACK_COMPLETE must be deleted before it can be created again)."
  fi
  if $dry_run; then previewed+=("$stack"); else deployed+=("$stack"); fi
done

if $dry_run; then
  echo "dry run: change sets created for: ${previewed[*]:-none}; nothing executed."
  if [[ ${#skipped[@]} -gt 0 ]]; then
    echo "dry run: skipped until their predecessors are deployed: ${skipped[*]}" >&2
  fi
else
  echo "deployed: ${deployed[*]:-none}"
fi
