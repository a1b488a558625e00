"""Health kiosks: vital signs and an ECG file, over MQTT or HTTP, matched by resident ID."""
