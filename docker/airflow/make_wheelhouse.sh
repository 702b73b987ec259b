#!/usr/bin/env bash
# Makes plugins.zip's wheels/ for this container's platform, in docker/airflow/Dockerfile's first
# stage (the base image's Python and pip, with PyPI):
#
#   make_wheelhouse.sh BUILD_DIR OUT_DIR
#
# BUILD_DIR holds requirements.txt, dbt-venv.txt, the MWAA constraints and image list for
# Airflow 2.10.3 / Python 3.11 and, optionally, build-ca.crt (the CA bundle pip is to trust).
#   OUT_DIR/requirements  what `pip install -r requirements.txt` installs beside this image: its
#                         pins and the dependencies the image lacks, at the constraints' versions
#                         (the image list's for the few the constraints leave open, e.g. msgpack)
#   OUT_DIR/dbt           the dbt venv's lock (startup.sh installs it with --no-index)
#   OUT_DIR/constraints-2.10.3-py3.11.txt, which requirements.txt names
# Wheels are built from source only where PyPI has none for this platform.
set -euo pipefail
build=$1 out=$2
cd "${build}"
if [[ -s build-ca.crt ]]; then
  export PIP_CERT="${build}/build-ca.crt"
fi
pip=(python -m pip --quiet --disable-pip-version-check --no-cache-dir)

grep -E '^[A-Za-z0-9]' requirements.txt >pins.txt
"${pip[@]}" install --user --dry-run --report report.json \
  -r pins.txt -c mwaa-constraints-2.10.3-py3.11.txt -c mwaa-image-2.10.3-py3.11.txt
python - <<'PYTHON' >missing.txt
import json

for item in json.load(open("report.json"))["install"]:
    print(f"{item['metadata']['name']}=={item['metadata']['version']}")
PYTHON
"${pip[@]}" wheel --no-deps --wheel-dir "${out}/requirements" -r missing.txt
"${pip[@]}" wheel --no-deps --wheel-dir "${out}/dbt" -r dbt-venv.txt
cp mwaa-constraints-2.10.3-py3.11.txt "${out}/constraints-2.10.3-py3.11.txt"
echo "make_wheelhouse: $(wc -l <missing.txt) requirements wheels, $(ls "${out}/dbt" | wc -l) dbt wheels"
