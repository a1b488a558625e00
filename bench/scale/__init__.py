"""Scale-out benchmark: teleconsult's ingest next to Orthanc's, and notifications across replicas.

Run ``python -m bench.scale --help`` from the repository root; see README.md.
"""
