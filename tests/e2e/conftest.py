"""Fixtures the end-to-end tests share: `dev_up`, a running `fleetflow dev up` (defined beside
the tests of dev up itself), also serves the browser tests of the API documentation pages."""

from tests.e2e.test_dev_up import dev_up  # noqa: F401 - re-exported as a fixture
