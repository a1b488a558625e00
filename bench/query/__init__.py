"""C-FIND latency of teleconsult against Orthanc on one synthetic county archive; see README.md."""
