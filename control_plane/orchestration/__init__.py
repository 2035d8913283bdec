"""Temporal: the workflow that drives one execution through its DAG, the activities that do its
I/O, and the worker that runs them."""
