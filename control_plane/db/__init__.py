"""The database layer: models, migrations, sessions and one repository per aggregate. It sits
below everything that uses it and imports only `lifecycle`, `tokens` and `metrics` of the
control plane."""
