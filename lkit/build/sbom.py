"""The SPDX document LinuxKit writes into every build (`sbom.spdx.json`), made deterministic.

LinuxKit merges the SPDX attestations of the images it uses into one document whose namespace holds
a random UUID; lkit derives that UUID from the images' digests instead, so the same spec and images
give the same bytes. lkit's store keeps no attestations (its base images carry none), so the merged
document lists no packages, exactly as LinuxKit's does for the same images. `--no-sbom` leaves it out.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

from lkit.core import buildtime
from lkit.spec.model import Spec

FILENAME = "sbom.spdx.json"
CREATED = buildtime.ISO8601
_NAMESPACE = uuid.UUID("6f1d5f0e-4c1b-4f55-9a7e-6c6b69742d73")  # lkit's own uuid5 namespace


def document(spec: Spec, images: Mapping[str, str]) -> bytes:
    """LinuxKit's merged SBOM for `images` (reference -> manifest digest), as its SPDX writer prints it."""
    seed = json.dumps(sorted(images.items())) + spec.name
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "sbom",
        "documentNamespace": f"https://github.com/linuxkit/linuxkit/sbom-{uuid.uuid5(_NAMESPACE, seed)}",
        "creationInfo": {"licenseListVersion": "3.20", "creators": ["Organization: LinuxKit", "Tool: linuxkit"],
                         "created": CREATED},
    }
    return (json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
