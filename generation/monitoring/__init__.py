"""What staff and Prometheus see: the dashboard's figures and /metrics."""
