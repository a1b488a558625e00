"""Reliability: nothing acknowledged is ever lost, under load and through crashes.

Run ``python -m bench.reliability --help`` from the repository root; the
short versions run in the test suite (``tests/reliability``).
"""
