"""The `mecha ui` web server: a Starlette app over the pipeline.

Every check and run goes through `commands.quick_form` (the form's recipe, `check_text`) and
`mechalang.pipeline` (load, check, plan, execute): the server holds no checking or running logic
of its own. Checks run in Starlette's thread pool and merges in a thread of their own, so the
event loop keeps serving pages while a merge runs.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from ..commands.catalog import ModelEntry, scan
from ..commands.quick_form import NAME_RULE, NAME_RULE_TEXT, check_form, check_text, command_line, recipe_text
from .forms import arch_json, catalog_json, diagnostics_json, form_state, methods_json, provenance_json
from .guard import COOKIE, Guard, Refused
from .jobs import Runner
from .page import page_html

STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
EDITOR = "<editor>"
MAX_BODY = 1_000_000


@dataclass
class UiState:
    guard: Guard
    runner: Runner = field(default_factory=Runner)
    port: int = 0

    @property
    def cookie(self) -> str:
        return f"{COOKIE}_{self.port}"  # one per port: two servers on one machine keep their own

    def entries(self) -> list[ModelEntry]:
        return scan(self.guard.models, confine=True)


class Gate:
    """ASGI middleware: Host, Origin and token checks before anything else is served."""

    def __init__(self, app, state: UiState):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # the page uses none: nothing to upgrade to
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        guard = self.state.guard
        reason = None
        if not guard.host_ok(headers.get("host")):
            reason = "refused: the Host header does not name this machine (DNS rebinding?)"
        elif not guard.origin_ok(headers.get("origin")):
            reason = "refused: a request from another site (Origin)"
        else:
            cookie = SimpleCookie()
            try:
                cookie.load(headers.get("cookie", ""))
            except Exception:
                pass
            given = cookie[self.state.cookie].value if self.state.cookie in cookie else None
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            url_token = (query.get("token") or [None])[0]
            if scope["path"] == "/" and scope["method"] == "GET" and guard.token_ok(url_token):
                # the URL the server opened: the token becomes a cookie and leaves the address bar
                response = RedirectResponse("/", status_code=303)
                response.set_cookie(self.state.cookie, guard.token, httponly=True, samesite="strict", path="/")
                return await response(scope, receive, send)
            if not guard.token_ok(given):
                reason = ("refused: this page needs the token of the URL `mecha ui` printed when it started "
                          "(open that URL again)")
        if reason is not None:
            return await PlainTextResponse(reason, status_code=403)(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(models: str | Path, output: str | Path | None = None, *, token: str | None = None,
               hosts: tuple[str, ...] | None = None, port: int = 0) -> Starlette:
    guard = Guard(Path(models), Path(output or models))
    if token:
        guard.token = token
    if hosts:
        guard.hosts = tuple(dict.fromkeys((*guard.hosts, *(h.lower() for h in hosts))))
    state = UiState(guard, port=port)

    async def body(request: Request) -> dict:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise Refused("request too large", 413)
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise Refused("the request body is not JSON", 400) from None
        if not isinstance(data, dict):
            raise Refused("the request body must be a JSON object", 400)
        return data

    def refusal(exc: Refused) -> JSONResponse:
        return JSONResponse({"ok": False, "refused": exc.reason}, status_code=exc.status)

    async def index(request: Request) -> Response:
        entries = await run_in_threadpool(state.entries)
        # only the page's own files run in it, and no other site may frame it (clickjacking)
        return HTMLResponse(page_html(guard, entries), headers={
            "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return PlainTextResponse("not found", status_code=404)
        return Response((STATIC / name).read_bytes(), media_type=ASSETS[name],
                        headers={"Cache-Control": "no-store"})

    async def models_(request: Request) -> Response:
        return JSONResponse({"models": catalog_json(await run_in_threadpool(state.entries)),
                             "folder": str(guard.models), "output": str(guard.output)})

    async def methods(request: Request) -> Response:
        return JSONResponse(methods_json())

    async def arch(request: Request) -> Response:
        return JSONResponse(arch_json(request.path_params["name"]))

    def _form(data: dict):
        s = form_state(data, guard, state.entries())
        return s, check_form(s)

    async def form(request: Request) -> Response:
        try:
            data = await body(request)
            s, r = await run_in_threadpool(_form, data)
        except Refused as exc:
            return refusal(exc)
        both = bool(s.models[0] and s.models[1])
        name = s.name.strip()
        return JSONResponse({
            "ok": r.ok, "lines": r.lines, "total_keys": r.total_keys,
            "recipe": r.text or (recipe_text(s) if both and not (name and not NAME_RULE.fullmatch(name)) else ""),
            "command": command_line(s) if both else "", "out_name": s.out_name, "default_name": s.default_name(),
            "name_ok": not name or bool(NAME_RULE.fullmatch(name)), "name_rule": NAME_RULE_TEXT,
            "quick": s.quick(), "baking": any(s.adapters[:len(s.chosen)]) and not s.adapters[0],
            "diagnostics": diagnostics_json(r) if r.program is not None else []})

    def _check(text: str):
        outside = guard.recipe_paths(text)
        if outside:
            return None, outside
        r = check_text(text, models_dir=guard.models, base_dir=guard.output, name=EDITOR)
        if r.program is not None:
            outside = guard.program_paths(r.program)
            if outside:
                return None, outside
        return r, []

    def _outside_json(outside: list[str]) -> dict:
        return {"ok": False, "refused": "the recipe names files outside the models and output folders: "
                + ", ".join(f"`{p}`" for p in outside), "diagnostics": [], "lines": []}

    async def check(request: Request) -> Response:
        try:
            text = str((await body(request)).get("text") or "")
        except Refused as exc:
            return refusal(exc)
        r, outside = await run_in_threadpool(_check, text)
        if r is None:
            return JSONResponse(_outside_json(outside), status_code=403)
        return JSONResponse({"ok": r.ok, "lines": r.lines, "total_keys": r.total_keys,
                             "diagnostics": diagnostics_json(r)})

    def _planned(text: str, trace: bool = False):
        from .. import pipeline

        r, outside = _check(text)
        if r is None:
            return None, _outside_json(outside)
        if not r.ok:
            return None, {"ok": False, "lines": r.lines, "diagnostics": diagnostics_json(r)}
        planned = pipeline.plan(r.program, trace=trace)
        if not planned.ok:
            from ..diagnostics import render_text

            return None, {"ok": False, "lines": render_text(planned.diagnostics, planned.sources).splitlines()}
        return planned, None

    async def keys(request: Request) -> Response:
        try:
            text = str((await body(request)).get("text") or "")
        except Refused as exc:
            return refusal(exc)

        def work():
            planned, problem = _planned(text)
            if planned is None:
                return problem
            return {"ok": True, "keys": [t.key for o in planned.plan.outputs for t in o.tensors]}

        return JSONResponse(await run_in_threadpool(work))

    async def explain(request: Request) -> Response:
        try:
            data = await body(request)
        except Refused as exc:
            return refusal(exc)
        text, key = str(data.get("text") or ""), str(data.get("key") or "")

        def work():
            from ..commands.plan import explain_text

            planned, problem = _planned(text, trace=True)
            if planned is None:
                return problem
            return {"ok": True, "text": explain_text(planned, key)}

        return JSONResponse(await run_in_threadpool(work))

    async def run(request: Request) -> Response:
        try:
            data = await body(request)
            if state.runner.busy:
                raise Refused("a merge is already running: wait for it to finish, or cancel it", 409)
            if "text" in data:
                r, outside = await run_in_threadpool(_check, str(data.get("text") or ""))
                if r is None:
                    return JSONResponse(_outside_json(outside), status_code=403)
                overwrite = bool(data.get("overwrite"))
            else:
                s, r = await run_in_threadpool(_form, dict(data.get("form") or {}))
                overwrite = s.overwrite
            if not r.ok:
                return JSONResponse({"ok": False, "lines": r.lines or ["the recipe does not check"]}, status_code=400)
            job = state.runner.start(r.program, overwrite=overwrite)
            if job is None:
                raise Refused("a merge is already running: wait for it to finish, or cancel it", 409)
        except Refused as exc:
            return refusal(exc)
        return JSONResponse({"ok": True, "job": job.snapshot()}, status_code=202)

    def _job(request: Request):
        try:
            job_id = int(request.path_params["job"])
        except ValueError:
            return None
        return state.runner.get(job_id)

    async def events(request: Request) -> Response:
        job = _job(request)
        if job is None:
            return PlainTextResponse("no such merge", status_code=404)

        async def stream():
            last = None
            while True:
                # `finished` read before the snapshot: a job that ends in between is sent once more,
                # with its final state, instead of the stream ending on a stale "running"
                finished = job.finished
                text = json.dumps(job.snapshot())
                if text != last:
                    last = text
                    yield f"event: {'done' if finished else 'progress'}\ndata: {text}\n\n"
                if finished:
                    return
                await asyncio.sleep(0.1)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def status(request: Request) -> Response:
        job = _job(request)
        return JSONResponse(job.snapshot()) if job else PlainTextResponse("no such merge", status_code=404)

    async def current(request: Request) -> Response:
        """The last merge started (a page opened while one runs follows it)."""
        job = state.runner.current
        return JSONResponse(job.snapshot() if job else {})

    async def cancel(request: Request) -> Response:
        job = _job(request)
        if job is None:
            return PlainTextResponse("no such merge", status_code=404)
        job.cancel.set()
        return JSONResponse({"ok": True, "job": job.snapshot()})

    async def save(request: Request) -> Response:
        """The form's recipe as `<name>.mecha` in the output folder (never over an existing file
        unless overwrite is ticked)."""
        try:
            s, r = await run_in_threadpool(_form, await body(request))
            if not (s.models[0] and s.models[1]) or (s.name.strip() and not NAME_RULE.fullmatch(s.name.strip())):
                raise Refused("nothing to save yet: fix the form first", 400)
            path = guard.file_in(guard.output, s.recipe_path.name)
            if path.exists() and not s.overwrite:
                raise Refused(f"{path.name} exists: tick overwrite, or choose another name", 409)
            path.write_text(recipe_text(s), encoding="utf-8")
        except Refused as exc:
            return refusal(exc)
        except OSError as exc:
            return JSONResponse({"ok": False, "refused": f"cannot write: {exc.strerror or exc}"}, status_code=500)
        return JSONResponse({"ok": True, "saved": path.name})

    async def provenance(request: Request) -> Response:
        name = request.query_params.get("name", "")
        try:
            path = guard.file_in(guard.output, name)
            if not path.is_file():
                raise Refused(f"{name!r} is not a file of the output folder", 404)
            return JSONResponse(await run_in_threadpool(provenance_json, path))
        except Refused as exc:
            return refusal(exc)

    routes = [
        Route("/", index), Route("/static/{name}", asset), Route("/favicon.ico", lambda r: Response(status_code=204)), Route("/api/models", models_),
        Route("/api/methods", methods), Route("/api/arch/{name}", arch),
        Route("/api/form", form, methods=["POST"]), Route("/api/save", save, methods=["POST"]),
        Route("/api/check", check, methods=["POST"]), Route("/api/keys", keys, methods=["POST"]),
        Route("/api/explain", explain, methods=["POST"]), Route("/api/run", run, methods=["POST"]),
        Route("/api/run/current", current), Route("/api/run/{job}", status), Route("/api/run/{job}/events", events),
        Route("/api/run/{job}/cancel", cancel, methods=["POST"]), Route("/api/provenance", provenance),
    ]
    app = Starlette(routes=routes)
    app.state.ui = state
    app.add_middleware(Gate, state=state)
    return app
