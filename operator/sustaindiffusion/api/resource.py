"""Names of the SustainSearch resource: group, version, kind."""

from __future__ import annotations

GROUP = "sustaindiffusion.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SustainSearch"
LIST_KIND = "SustainSearchList"
PLURAL = "sustainsearches"
SINGULAR = "sustainsearch"
SHORT_NAMES = ("sds",)
