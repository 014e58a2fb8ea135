"""The routes of /sdapi/v1, on the same server and port as the UI.

`api_routes(studio, auth)` returns Starlette routes that app.py hands to Gradio's FastAPI app when
it is made (`app_kwargs={"routes": ...}`), so they come before every Gradio route. Handlers are
plain functions (FastAPI runs them on its thread pool): a generation waits its turn in the
dispatcher; progress, interrupt and skip never wait behind it.

Errors have A1111's shape `{error, detail, body, errors}` with a fitting status (400 a value the
studio refuses, 401 a wrong login, 404 no init image, 422 an unknown script, 429 over the jobs a
minute, 503 the queue is full, 500 anything unexpected, without a traceback); a body of the wrong
type keeps FastAPI's 422 `{detail: [...]}`, as in A1111.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import logging
import math
import secrets
from typing import Any, Callable

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Route

from studio import __version__
from studio.api import catalog, controlnet, convert, regions
from studio.api.calls import Caller, Calls
from studio.api.schema import ExtrasSingleBody, Img2ImgBody, InterrogateBody, PngInfoBody, Txt2ImgBody
from studio.errors import QueueFull, StudioError, TooManyJobs
from studio.requests import Limits
from studio.inputs import load_image
from studio.outputs.pnginfo import read_info
from studio.serving.studio import Studio
from studio.upscale.extras import upscale_picture
from studio.upscale.sd_upscale import SCRIPT as SD_UPSCALE
from studio.upscale.hires import LATENT

log = logging.getLogger(__name__)

PREFIX = "/sdapi/v1"
STATUS = ((TooManyJobs, 429), (QueueFull, 503), (ValueError, 400))     # first match; else 500


def _error(status: int, error: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, "body": "", "errors": detail}, status_code=status,
                        headers=headers)


class BadBody(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number in JSON")


async def checked_body(request: Request, limit: int) -> None:
    """A POST body within `limit` bytes (refused from its Content-Length before it is read, or as
    soon as it passes the limit) and, when it is JSON, strict JSON: no NaN or Infinity, numbers of
    a sensible size, not nested beyond what a request needs. Kept for the route to read again."""
    if request.method not in ("POST", "PUT"):
        return
    mb = f"{limit / 2**20:g} MB"
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise BadBody(413, f"The body is {int(length) / 2**20:.1f} MB; this studio takes at most {mb} "
                           "(--max-body-mb).")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadBody(413, f"The body is larger than this studio takes ({mb}, --max-body-mb).")
    request._body = body        # (starlette reads a consumed stream from here)
    if body.strip() and "json" in request.headers.get("content-type", "json"):
        try:
            json.loads(body, parse_constant=_no_constant)
        except RecursionError:
            raise BadBody(400, "The JSON body is nested too deeply.") from None
        except json.JSONDecodeError:
            return          # FastAPI answers it: 422 with where the JSON breaks, as A1111 does
        except ValueError as exc:      # NaN, Infinity, or an integer past Python's 4,300 digits
            raise BadBody(400, f"The body is not valid JSON: {exc}." if "JSON" in str(exc) else
                          "The body is not valid JSON: a number in it has too many digits.") from None


def _finite(value: Any) -> Any:
    """A validation error's inputs as JSON can carry them (no NaN or Infinity, long values cut)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    return value


class A1111Route(APIRoute):
    """A route whose failures answer in A1111's error shape, never with a traceback; its body is
    checked first (`checked_body`), against `max_body` bytes."""
    max_body = Limits().max_body_bytes

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request):
            try:
                await checked_body(request, self.max_body)
                return await handler(request)
            except BadBody as exc:
                return _error(exc.status, "HTTPException", exc.detail)
            except RequestValidationError as exc:      # FastAPI's 422 shape, as A1111 answers
                return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)
            except StarletteHTTPException as exc:
                return _error(exc.status_code, "HTTPException", str(exc.detail), exc.headers)
            except convert.ApiError as exc:
                return _error(exc.status, "HTTPException", exc.detail)
            except StudioError as exc:
                status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
                return _error(status, type(exc).__name__, str(exc))
            except Exception as exc:  # noqa: BLE001 - the server keeps serving; the log has the trace
                log.exception("REST call failed: %s %s", request.method, request.url.path)
                return _error(500, type(exc).__name__, f"{type(exc).__name__}: {exc}. The studio is still "
                              "running; the server log has the details.")
        return route


def caller_dependency(auth: list[tuple[str, str]]) -> Callable:
    """HTTP Basic with the UI's logins when there are any; without, the header is not read at all
    (SillyTavern sends `Basic ` with empty credentials, Open WebUI an empty header)."""
    async def caller(request: Request) -> Caller:
        if not auth:
            host = request.client.host if request.client else "unknown"
            return Caller(user=f"api@{host}", session="api")
        login = _basic(request.headers.get("authorization", ""))
        if login is None or not any(secrets.compare_digest(login[0].encode(), u.encode()) &
                                    secrets.compare_digest(login[1].encode(), p.encode()) for u, p in auth):
            raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})
        return Caller(user=login[0], session=f"api:{login[0]}")
    return caller


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if sep else None


def api_routes(studio: Studio, auth: list[tuple[str, str]]) -> list[BaseRoute]:
    """Every /sdapi/v1 route, plus /docs and /openapi.json describing them (and nothing else)."""
    who = Depends(caller_dependency(auth))      # every route: a wrong login is refused first
    route_class = type("A1111Route", (A1111Route,), {"max_body": studio.limits.max_body_bytes})
    router = APIRouter(prefix=PREFIX, route_class=route_class, dependencies=[who], tags=["A1111-compatible"])
    options, calls = catalog.Options(studio), Calls(studio)

    @router.post("/txt2img")
    def txt2img(body: Txt2ImgBody, caller: Caller = who) -> dict:
        translated = convert.txt2img(body, studio, options)
        return convert.answer(body, translated, calls.run(translated, caller))

    @router.post("/img2img")
    def img2img(body: Img2ImgBody, caller: Caller = who) -> dict:
        convert.room_for(body, studio, caller.user)          # before any picture is decoded
        translated = convert.img2img(body, studio, options)
        return convert.answer(body, translated, calls.run(translated, caller))

    # progress, interrupt and skip run on the event loop itself: never behind a waiting generation
    @router.get("/progress")
    async def progress(skip_current_image: bool = False, caller: Caller = who) -> dict:
        return calls.progress(caller, with_image=not skip_current_image)

    @router.post("/interrupt")
    async def interrupt(caller: Caller = who) -> dict:
        calls.interrupt(caller)
        return {}

    @router.post("/skip")
    async def skip(caller: Caller = who) -> None:
        calls.skip(caller)

    @router.get("/options")
    def get_options() -> dict:
        return options.get()

    @router.post("/options")
    def set_options(body: Any = Body(...)) -> None:
        options.set(body)

    @router.post("/png-info")
    def png_info(body: PngInfoBody) -> dict:
        info = read_info(load_image("image", convert.decode_image("image", body.image), mode="keep"))
        return {"info": info.infotext, "items": info.items, "parameters": info.a1111_parameters()}

    @router.post("/extra-single-image")
    def extra_single_image(body: ExtrasSingleBody, caller: Caller = who) -> dict:
        done = upscale_picture(studio, convert.decode_image("image", body.image), convert.extras_settings(body, studio),
                               user=caller.user, session=caller.session)
        return {"html_info": html.escape(done.parameters).replace("\n", "<br>"),
                "image": base64.b64encode(done.path.read_bytes()).decode("ascii")}

    @router.post("/interrogate")
    def interrogate(body: InterrogateBody) -> None:
        raise HTTPException(404, "Model not found")

    def refresh() -> None:
        studio.names("checkpoints", rescan=True)

    for path in ("/refresh-checkpoints", "/refresh-loras", "/refresh-vae", "/refresh-embeddings"):
        router.add_api_route(path, refresh, methods=["POST"], name=path.strip("/"))
    listings: dict[str, Callable[[], Any]] = {
        "/sd-models": lambda: catalog.sd_models(studio), "/samplers": catalog.samplers,
        "/schedulers": catalog.schedulers, "/upscalers": lambda: catalog.upscalers(studio),
        "/latent-upscale-modes": lambda: [{"name": name} for name in LATENT], "/sd-vae": lambda: catalog.sd_vae(studio),
        "/loras": lambda: catalog.loras(studio), "/embeddings": lambda: catalog.embeddings(studio),
        "/prompt-styles": lambda: catalog.prompt_styles(studio), "/hypernetworks": lambda: [],
        "/face-restorers": lambda: catalog.face_restorers(studio), "/realesrgan-models": lambda: [], "/script-info": lambda: [catalog.sd_upscale_info(studio)],
        "/scripts": lambda: {"txt2img": [controlnet.SCRIPT, regions.SCRIPT],
                             "img2img": [SD_UPSCALE, controlnet.SCRIPT, regions.SCRIPT]},
        "/extensions": lambda: [],
        "/cmd-flags": lambda: {"api": True, "nowebui": False, "api_auth": bool(auth), "listen": False},
    }
    for path, listing in listings.items():
        router.add_api_route(path, listing, methods=["GET"], name=path.strip("/"))
    routes = [*router.routes, *controlnet.routes(studio, convert.decode_image, route_class, [who])]
    return [*routes, *_docs(routes, caller_dependency(auth) if auth else None)]


def _docs(routes: list[BaseRoute], login: Callable | None) -> list[BaseRoute]:
    """OpenAPI of the REST routes only (Gradio's own routes are not an API to build on); behind the
    same logins as the API."""
    schema = {}

    async def checked(request: Request) -> JSONResponse | None:
        if login is None:
            return None
        try:
            await login(request)
        except HTTPException as exc:
            return _error(exc.status_code, "HTTPException", str(exc.detail), exc.headers)
        return None

    async def openapi(request: Request) -> JSONResponse:
        if (refused := await checked(request)) is not None:
            return refused
        if not schema:
            schema.update(get_openapi(title="Stable Diffusion Studio: A1111-compatible API", version=__version__,
                                      routes=routes, description="AUTOMATIC1111's /sdapi/v1, served by the studio."))
        return JSONResponse(schema)

    async def docs(request: Request):
        if (refused := await checked(request)) is not None:
            return refused
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Studio API")

    return [Route("/openapi.json", openapi, include_in_schema=False), Route("/docs", docs, include_in_schema=False)]
