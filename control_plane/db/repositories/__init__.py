"""Repositories: the queries and writes of the control plane, one module per aggregate.

Functions take the caller's `Session` and never commit: the caller (an API route, a Temporal
activity) owns the transaction.
"""
