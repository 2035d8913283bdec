"""Code bundles and uploaded inputs as the API answers them."""

from __future__ import annotations

from pydantic import BaseModel


class BundlePublic(BaseModel):
    digest: str
    size_bytes: int


class UploadPublic(BaseModel):
    uri: str
    size_bytes: int
