#!/usr/bin/env bash
# Builds local stand-ins for the upstream images docker-compose.yaml names, from packages only,
# for machines that reach Debian's and PyPI's package archives but no image registry:
#
#   docker/standins/build.sh [base|python|postgres|moto|airflow]...   (default: all, in order)
#   docker/standins/build.sh --if-missing    only those of the upstream images that are neither
#                                             present nor pullable (with base and python)
#
#   base      movielens-standin/debian:bookworm   a Debian bookworm root filesystem (mmdebstrap)
#   python    movielens-standin/python:3.11       base + this machine's own CPython 3.11
#   postgres  postgres:16                         base + PostgreSQL 16 from the pgserver wheel
#   moto      motoserver/moto:5.0.11              python + moto's server
#   airflow   apache/airflow:2.10.3-python3.11    python + Airflow 2.10.3 under MWAA's constraints
#
# The last three carry the upstream names, so that docker-compose.yaml runs unchanged; each has the
# label org.movielens.standin. Docker's layer cache makes a second run quick; the base is made
# again only when its package list changes. pip inside the builds trusts MOVIELENS_BUILD_CA
# (default: this machine's CA bundle, which holds the certificate of a TLS-intercepting proxy where
# there is one); the bundle stays in the builds' first stages, never in an image's last.
# Needs root (mmdebstrap), Docker, and PYTHON (default python3.11): the Python 3.11 to copy.
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE_IMAGE=movielens-standin/debian:bookworm
PYTHON_IMAGE=movielens-standin/python:3.11
# The upstream image each stand-in replaces (a function, not an associative array: macOS ships
# bash 3.2, and `make compose-up` runs this script there too).
upstream_image() {
  case $1 in
    postgres) echo postgres:16 ;;
    moto) echo motoserver/moto:5.0.11 ;;
    airflow) echo apache/airflow:2.10.3-python3.11 ;;
  esac
}
MWAA_CONSTRAINTS=requirements/mwaa/mwaa-constraints-2.10.3-py3.11.txt
# What every image needs at run time: TLS roots, curl (health checks), dumb-init (the Airflow
# entrypoint) and the shared libraries CPython's extension modules link against.
BASE_PACKAGES=ca-certificates,curl,dumb-init,libbz2-1.0,libexpat1,libffi8,liblzma5,libncursesw6,libreadline8,libsqlite3-0,libssl3,libuuid1,zlib1g
DEBIAN_SOURCES=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
STANDIN_LABEL=org.movielens.standin

scratch="$(mktemp -d)"
trap 'rm -rf "${scratch}"' EXIT

log() { echo "standins: $*"; }

# A build context: the image's folder, the CA bundle for pip (empty when there is none), extras.
context() {
  local name=$1 dir="${scratch}/${1}"
  shift
  mkdir -p "${dir}"
  cp -R "docker/standins/${name}/." "${dir}/"
  : >"${dir}/build-ca.crt"
  local ca="${MOVIELENS_BUILD_CA-/etc/ssl/certs/ca-certificates.crt}"
  if [[ -n "${ca}" && -f "${ca}" ]]; then
    cp "${ca}" "${dir}/build-ca.crt"
  fi
  for extra in "$@"; do
    cp "${extra%%=*}" "${dir}/${extra#*=}"
  done
  echo "${dir}"
}

build() {
  local tag=$1 dir=$2
  shift 2
  local started=${SECONDS}
  docker build --tag "${tag}" --label "${STANDIN_LABEL}=${tag}" "$@" "${dir}"
  log "built ${tag} in $((SECONDS - started)) s"
}

build_base() {
  local recipe
  recipe="$(printf '%s\n' bookworm minbase "${BASE_PACKAGES}" "${DEBIAN_SOURCES[@]}" | sha256sum | cut -c1-16)"
  if [[ "$(docker image inspect --format "{{index .Config.Labels \"${STANDIN_LABEL}.recipe\"}}" "${BASE_IMAGE}" 2>/dev/null)" == "${recipe}" ]]; then
    log "${BASE_IMAGE} is up to date"
    return
  fi
  command -v mmdebstrap >/dev/null || { log "mmdebstrap is missing: apt-get install mmdebstrap"; exit 2; }
  local started=${SECONDS}
  mmdebstrap --quiet --variant=minbase --include="${BASE_PACKAGES}" bookworm "${scratch}/rootfs.tar" "${DEBIAN_SOURCES[@]}"
  docker import \
    --change "LABEL ${STANDIN_LABEL}=${BASE_IMAGE} ${STANDIN_LABEL}.recipe=${recipe}" \
    --change "ENV LANG=C.UTF-8" --change 'CMD ["bash"]' \
    "${scratch}/rootfs.tar" "${BASE_IMAGE}" >/dev/null
  rm -f "${scratch}/rootfs.tar"
  log "built ${BASE_IMAGE} in $((SECONDS - started)) s"
}

build_python() {
  local python="${PYTHON:-python3.11}" prefix dir
  prefix="$("${python}" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version; print(sys.base_prefix)')"
  dir="$(context python)"
  mkdir -p "${dir}/python/lib/python3.11/site-packages"
  # The interpreter, libpython and the standard library; not the packages installed here, the
  # test suite, Tk (no X libraries in the image) or static libraries.
  tar -C "${prefix}" --create \
    --exclude='lib/python3.11/site-packages/*' --exclude=lib/python3.11/test \
    --exclude=lib/python3.11/idlelib --exclude=lib/python3.11/tkinter \
    --exclude=lib/python3.11/turtledemo --exclude='lib/python3.11/lib-dynload/_tkinter*' \
    --exclude='*.a' \
    bin/python3.11 lib/libpython3.11.so lib/libpython3.11.so.1.0 lib/libpython3.so \
    lib/python3.11 include/python3.11 |
    tar -C "${dir}/python" --extract
  build "${PYTHON_IMAGE}" "${dir}"
}

build_postgres() {
  local version
  version="$(sed -n 's/^pgserver==//p' requirements/local-stack.txt)"
  build "$(upstream_image postgres)" "$(context postgres)" --build-arg "PGSERVER_VERSION=${version}"
}

build_moto() {
  build "$(upstream_image moto)" "$(context moto "${MWAA_CONSTRAINTS}=constraints.txt")"
}

build_airflow() {
  build "$(upstream_image airflow)" "$(context airflow "${MWAA_CONSTRAINTS}=constraints.txt")"
}

images=("$@")
if [[ "${images[*]}" == --if-missing ]]; then
  images=()
  for name in postgres moto airflow; do
    if ! docker image inspect "$(upstream_image "${name}")" >/dev/null 2>&1 &&
      ! docker pull --quiet "$(upstream_image "${name}")" >/dev/null 2>&1; then
      log "$(upstream_image "${name}") is missing and cannot be pulled: building a stand-in"
      images+=("${name}")
    fi
  done
  if ((${#images[@]} == 0)); then
    log "$(for name in postgres moto airflow; do upstream_image "${name}"; done | xargs) are present"
    exit 0
  fi
  images=(base python "${images[@]}")
fi
if ((${#images[@]} == 0)); then
  images=(base python postgres moto airflow)
fi
for image in "${images[@]}"; do
  case "${image}" in
    base | python | postgres | moto | airflow) "build_${image}" ;;
    *) log "unknown image ${image}: one of base python postgres moto airflow"; exit 2 ;;
  esac
done
