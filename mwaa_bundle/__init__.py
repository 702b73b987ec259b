"""What the MWAA bucket holds, made here: the wheels (``wheelhouse``), the bundle's layout
(``build``), the checks that MWAA can install and import it (``checks``) and the upload
(``upload``), for each of MWAA's Airflow versions (``targets``). ``python -m mwaa_bundle``
runs them; ``make bundle`` and ``make deploy`` call it.
"""


class BundleError(RuntimeError):
    """The bundle cannot be built, fails its check, or cannot be uploaded."""
