"""Where built ontology artefacts (search indexes) are kept between processes, and their cache key.

`$ICDCODER_CACHE/ontology`, else `$XDG_CACHE_HOME/icdcoder/ontology`, else `~/.cache/icdcoder/ontology`.
The key covers the data packages' versions and the source of this package's ontology modules, so an
upgrade of either builds afresh instead of reading stale data.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from icdcoder.io import cache_root
from icdcoder.ontology.sources import package_versions

CACHE_FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    return cache_root() / "ontology"


@cache
def cache_key() -> str:
    """16 hex characters that change whenever the data packages or the ontology code change."""
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_FORMAT_VERSION, package_versions()], sort_keys=True).encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
