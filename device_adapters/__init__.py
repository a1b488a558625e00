"""Adapters for devices that do not speak DICOM (one module per device family)."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
