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
# the ones a template declares. ProjectName/EnvironmentName are set from the
# environment variables above (they name the stacks and the exports).
#
# Before each stack the script checks that every export the template imports
# (Fn::ImportValue) exists. If one is missing, a deploy stops and names the
# stacks to deploy first; a --dry-run skips that stack, previews the others and
# lists the skipped ones at the end (on a fresh account only network and
# storage can be previewed: the rest import exports of stacks never executed).
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

die() { echo "deploy.sh: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=true ;;
    --only)
      [[ $# -ge 2 ]] || { echo "--only needs a stack: ${STACKS[*]}" >&2; exit 2; }
      only="${2//-/_}"; shift ;;
    --) shift; overrides+=("$@"); break ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ -n "$only" && " ${STACKS[*]} " != *" ${only} "* ]]; then
  echo "--only ${only}: no such stack; choose one of: ${STACKS[*]}" >&2
  exit 2
fi
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

mwaa_object_versions() {
  local bucket="${project}-mwaa-${env_name}" key param version err
  for pair in plugins.zip:PluginsS3ObjectVersion requirements.txt:RequirementsS3ObjectVersion \
              startup.sh:StartupScriptS3ObjectVersion; do
    key="${pair%%:*}"; param="${pair##*:}"
    if ! version="$(aws s3api head-object --bucket "$bucket" --key "$key" \
                      --query VersionId --output text 2>"${tmp}/head-object.err")"; then
      err="$(tr '\n' ' ' <"${tmp}/head-object.err")"
      echo "s3://${bucket}/${key} is missing or unreadable${err:+ (${err% })}:" \
           "upload the MWAA bundle (plugins.zip, requirements.txt, startup.sh, dags/) before the mwaa stack." >&2
      return 1
    fi
    if [[ -z "$version" || "$version" == None ]]; then
      echo "s3://${bucket}/${key} has no version id: the mwaa stack pins object versions," \
           "so the bucket must be versioned (storage stack) before the bundle is uploaded." >&2
      return 1
    fi
    echo "${param}=${version}"
  done
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

previewed=() skipped=() deployed=()
for stack in "${STACKS[@]}"; do
  [[ -n "$only" && "$only" != "$stack" ]] && continue
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
    versions_text="$(mwaa_object_versions)" \
      || die "${label}: not deployed, the MWAA bundle is incomplete (see above)."
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
