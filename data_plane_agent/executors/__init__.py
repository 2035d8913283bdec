"""Executors launch leased attempts on the cluster's compute and watch them to the end."""
