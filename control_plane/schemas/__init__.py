"""Request bodies of the REST API and their validation; the answers are
`fleetflow.api_models`, shared with the client."""
