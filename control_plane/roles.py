"""The roles a principal can hold in a tenant.

A leaf (standard library only), so the API's schemas can name roles without importing `auth/`,
which sits above the database; `auth/rbac.py` says what each role may do.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    PLATFORM_ADMIN = "platform-admin"
    TENANT_ADMIN = "tenant-admin"
    DEVELOPER = "developer"
    VIEWER = "viewer"
