"""Serving: `difflab serve`, an HTTP API with micro-batching, limits and a web page.

`Service(load_catalog("shapes-base"), ServeConfig())` holds the model and the queue;
`create_app(service)` is its FastAPI app; `Server(service).run()` runs it under uvicorn.
"""

from difflab.serve.app import create_app
from difflab.serve.config import Plan, ServeConfig, read_plans
from difflab.serve.server import Server
from difflab.serve.service import Catalog, Service, load_catalog

__all__ = ["Catalog", "Plan", "ServeConfig", "Server", "Service", "create_app", "load_catalog",
           "read_plans"]
