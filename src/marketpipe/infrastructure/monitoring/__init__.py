"""Monitoring: Prometheus metrics and webhook alerts of the long-running ``marketpipe run``."""
