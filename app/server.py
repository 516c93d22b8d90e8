"""`eoexplorer serve`: one port for everything the browser needs.

Until the dashboard lands (issue 5) this serves the tile service, and registers a true-colour
chain of the newest demo scene so the printed tile URL shows real imagery in any XYZ client.
"""

from __future__ import annotations

import logging
import sys

from app.settings import Settings
from app.wiring import build_service, catalog_from

log = logging.getLogger(__name__)


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def serve(settings: Settings, *, demo: bool = False) -> int:
    """Prepare (optionally) the demo data, then serve until interrupted."""
    import uvicorn

    if demo:
        from engine.demo import prepare_demo

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        reports = prepare_demo(catalog_from(settings), data_dir=settings.data_dir,
                               progress=sys.stderr.isatty())
        for name, report in reports.items():
            for path, reason in report.failed:
                log.warning("demo %s: could not ingest %s: %s", name, path, reason)

    service = build_service(settings)
    base = f"http://{settings.address}:{settings.port}{settings.prefix}"
    _write(f"EO Explorer is serving on {base}/")
    _write(f"  API: {base}/api/collections   OpenAPI: {base}/openapi.json   health: {base}/healthz")
    uvicorn.run(service, host=settings.address, port=settings.port, log_level="warning")
    return 0
