"""A helper package of the `remote_errors` workflows: its frames show as `remote_errors_lib/…`."""
