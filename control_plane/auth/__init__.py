"""Who is calling (tokens, principals) and what they may do (casbin RBAC with tenant domains)."""
