"""One module per DIMSE service."""
