"""Code bundles: content-addressed tar.gz archives of the engineer's source tree."""

from fleetflow.api_models.bundles import BundlePublic

__all__ = ["BundlePublic"]
