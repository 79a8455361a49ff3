"""The Prometheus scrape config and the Grafana dashboard under deploy/observability/,
rendered from services/topology.py and the metrics catalogue (`python -m tools.observability`)."""
