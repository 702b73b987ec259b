"""Benchmarks: run each as `python -m benchmarks.<name>` from the Airflow venv."""
