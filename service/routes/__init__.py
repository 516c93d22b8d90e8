"""Route factories: each groups related endpoints and holds their dependencies as fields."""

from service.routes.catalog import CatalogRoutes
from service.routes.chains import ChainRoutes
from service.routes.extract import ExtractRoutes
from service.routes.health import HealthRoutes

__all__ = ["CatalogRoutes", "ChainRoutes", "ExtractRoutes", "HealthRoutes"]
