"""The scalewise image's HEALTHCHECK: GET $SCALEWISE_HEALTH_URL (default: the webhook receiver's /healthz).

Exit 0 when it answers 2xx within 2 s, else 1 with the reason on stderr. Workers started with
``prefect worker start --with-healthcheck`` set SCALEWISE_HEALTH_URL to their own endpoint
(``http://127.0.0.1:8080/health``). Standard library only, so it costs no import time.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT = "http://127.0.0.1:8787/healthz"


def main() -> int:
    url = os.environ.get("SCALEWISE_HEALTH_URL") or DEFAULT
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            ok = 200 <= resp.status < 300
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if not ok:
        print(f"unhealthy: {url}: HTTP {resp.status}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
