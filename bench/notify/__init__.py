"""Notification latency: C-STORE response to ``study.stored`` on a specialist's WebSocket."""
