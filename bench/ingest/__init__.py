"""C-STORE ingest benchmark: teleconsult against a bare pynetdicom receiver.

Run ``python -m bench.ingest --help`` from the repository root.
"""
