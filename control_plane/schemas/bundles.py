"""Code bundles: content-addressed tar.gz archives of the engineer's source tree."""

from __future__ import annotations

from pydantic import BaseModel


class BundlePublic(BaseModel):
    digest: str
    size_bytes: int
