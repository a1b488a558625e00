"""DICOM network services of teleconsult (pynetdicom)."""

import logging

from dicom_gateway.ae import GatewayContext, build_ae, start_gateway

__all__ = ["GatewayContext", "build_ae", "start_gateway"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
