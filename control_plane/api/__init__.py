"""The REST API (FastAPI): thin routes that authenticate, authorise and call the services and
repositories; one error shape, request limits and `/metrics`."""
