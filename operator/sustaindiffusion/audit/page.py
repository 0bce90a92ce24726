"""The labelling page: one image at a time, three questions, keyboard shortcuts, undo, progress.

A Starlette app over one audit set and one annotator. It reads the manifest and the images (each
checked against its sha256 before it is served) and the annotator's label file; it never reads the
detector's answers, so no response can carry them. Every answer is saved before the response
(`labels.LabelStore`), so a killed server loses nothing, and the page asks the server where it is
after every answer, so a restart resumes at the same question.

    GET  /              the page
    GET  /api/state     where the annotator is: the image, the question, the progress
    POST /api/answer    {"item": ID, "field": "person"|"gender"|"ethnicity", "value": ...}
    POST /api/undo      take back the last answer
    GET  /images/{id}   an image of the set

Bad input (an unknown image, an answer outside the scheme, a question out of turn, a body that is
not JSON) gets a 4xx with {"error": message} and changes nothing. POSTs must be JSON
(Content-Type: application/json), which a form on another site cannot send without the browser
asking first: no other page can answer in the annotator's name.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from sustaindiffusion.audit.auditset import Manifest, sha256_of, verify
from sustaindiffusion.audit.labels import LabelError, LabelStore
from sustaindiffusion.audit.scheme import BY_FIELD, QUESTIONS

TEMPLATES = Path(__file__).with_name("templates")
UNDO_KEYS = ("z", "Backspace")


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class LabellingPage:
    def __init__(self, directory: Path, annotator: str) -> None:
        self.directory = directory
        self.manifest: Manifest = verify(directory)  # AuditSetError: refuse to start on a changed set
        digest = (directory / "manifest.sha256").read_text().strip()
        self.store = LabelStore(directory, annotator, self.manifest, digest)
        self.annotator = annotator
        self.templates = Jinja2Templates(directory=str(TEMPLATES))

    def state(self) -> dict[str, Any]:
        current = self.store.current()
        labels = self.store.labels()
        state: dict[str, Any] = {
            "annotator": self.annotator,
            "total": len(self.manifest.items),
            "complete": self.store.complete(),
            "answers": len(self.store.answers),
            "canUndo": bool(self.store.answers),
            "done": current is None,
            "item": None,
            "image": None,
            "question": None,
            "answered": {},
        }
        if current is not None:
            item, field = current
            question = BY_FIELD[field]
            state |= {
                "item": item,
                "image": f"images/{item}",
                "question": {
                    "field": question.field,
                    "prompt": question.prompt,
                    "options": [asdict(option) for option in question.options],
                },
                "answered": labels.get(item, {}),
            }
        return state

    async def index(self, request: Request) -> Response:
        return self.templates.TemplateResponse(
            request,
            "label.html",
            {
                "annotator": self.annotator,
                "total": len(self.manifest.items),
                "questions": QUESTIONS,
                "undo_keys": UNDO_KEYS,
            },
        )

    async def get_state(self, request: Request) -> Response:
        return JSONResponse(self.state())

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error("send the answer as JSON (Content-Type: application/json)", 415)
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error("the body is not JSON", 400)
        if not isinstance(body, dict):
            return _error("the body must be a JSON object", 400)
        return body

    async def post_answer(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        fields = ("item", "field", "value")
        if set(body) != set(fields) or not all(isinstance(body[key], str) for key in fields):
            return _error('expected {"item": ID, "field": QUESTION, "value": ANSWER}, all strings', 422)
        try:
            self.store.answer(body["item"], body["field"], body["value"])
        except LabelError as error:
            return _error(str(error), error.status)
        return JSONResponse(self.state())

    async def post_undo(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        try:
            self.store.undo()
        except LabelError as error:
            return _error(str(error), error.status)
        return JSONResponse(self.state())

    async def image(self, request: Request) -> Response:
        item = self.manifest.item(str(request.path_params["item"]))
        if item is None:
            return _error(f"unknown image id {request.path_params['item']!r}: not in this audit set", 404)
        path = self.directory / item.image
        data = path.read_bytes() if path.is_file() else b""
        if not data or sha256_of(path) != item.sha256:
            return _error(f"{item.image} was changed or removed after export: export the set again", 409)
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok")


def create_app(directory: Path, annotator: str) -> Starlette:
    """The page's app; raises AuditSetError (a changed set) or LabelError (a bad label file)."""
    page = LabellingPage(directory, annotator)
    app = Starlette(
        routes=[
            Route("/", page.index),
            Route("/healthz", page.health),
            Route("/api/state", page.get_state),
            Route("/api/answer", page.post_answer, methods=["POST"]),
            Route("/api/undo", page.post_undo, methods=["POST"]),
            Route("/images/{item}", page.image),
        ]
    )
    app.state.page = page
    return app
