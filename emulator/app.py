"""The whole emulator as one ASGI app: Amplitude's paths plus the /_emulator control API."""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from emulator import __version__, openapi
from emulator.backend import Backend
from emulator.clock import Clock
from emulator.contract import ContractMiddleware, ViolationLog, effective_mode
from emulator.control import routes as control_routes
from emulator.control.middleware import ControlMiddleware
from emulator.control.service import Control, InvalidState
from emulator.settings import Settings, ValidationMode
from emulator.wire import routes as amplitude_routes

logger = logging.getLogger("emulator")

# FastAPI's native OpenTelemetry spans and metrics (recent FastAPI asks the global providers on
# every request, several percent of a request's time here): a test double's requests are not the
# user's telemetry. Older FastAPI has no such parameter.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """The emulator; `app.state.backend` holds its state and `app.state.control` its controls."""
    settings = settings or Settings()
    backend = Backend(settings, clock)
    control = Control(backend, journal_size=settings.journal_size, admin_token=settings.admin_token)

    def load_seed() -> None:
        assert settings.seed is not None
        try:
            control.load_seed(settings.seed)
        except InvalidState as error:
            control.load_error = str(error)
            logger.error("amplitude-emulator: %s", error)
            return
        control.ready = True

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # A seed loads after the server is up, so /_emulator/health answers at once and
        # /_emulator/ready tells when the data is there.
        if settings.seed is None:
            control.ready = True
        else:
            threading.Thread(target=load_seed, name="seed loader", daemon=True).start()
        yield
        backend.close()

    app = FastAPI(
        title="Amplitude User Mapping API emulator",
        version=__version__,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # `/usermap/` is not one of Amplitude's paths: answer the JSON 404, not a 307 redirect.
        redirect_slashes=False,
        **_NO_TELEMETRY,
    )
    app.state.backend = backend
    app.state.control = control
    # The published contract (openapi/openapi.yaml) is served as written, never generated.
    openapi.install(app)
    amplitude_routes.install(app)
    app.include_router(control_routes.router)
    app.add_middleware(ControlMiddleware, control=control)
    mode = effective_mode(settings.validate_responses)
    app.state.violations = ViolationLog(mode)
    if mode is not ValidationMode.OFF:  # outermost: it sees what the client would get
        app.add_middleware(ContractMiddleware, violations=app.state.violations)
    return app
