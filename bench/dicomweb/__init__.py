"""``python -m bench.dicomweb``: QIDO-RS latency and WADO-RS throughput against a real uvicorn."""
