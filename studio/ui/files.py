"""What the file route serves of the outputs folder. Gradio serves every file under its
`allowed_paths`; in front of it, this guard lets a request through to a file in the outputs
folder only when it is the caller's: with logins, in the caller's own space (outputs/<login>/)
or a training job of theirs (outputs/training/<job>/, its job.json naming them); without logins,
anything but hidden files (the history index). A file that is not the caller's is answered as one
that is not there.

The login is read as Gradio reads it (its `access-token` cookie in the app's tokens), since a
middleware runs before Gradio's own routes.
"""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from pathlib import Path

from studio.outputs.folder import space_name

TRAINING = "training"


def login_of(scope: dict) -> str | None:
    """The login of the request's Gradio session cookie, if any."""
    app = scope.get("app")
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    if not tokens or cookie_id is None:
        return None
    header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"cookie"), "")
    cookies = SimpleCookie()
    try:
        cookies.load(header)
    except Exception:  # noqa: BLE001 - a malformed cookie header is no login
        return None
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        if name in cookies and cookies[name].value in tokens:
            return tokens[cookies[name].value]
    return None


def may_read(root: Path, target: Path, login: str | None, spaces: bool) -> bool:
    """Whether `target` (resolved) may be served: outside the outputs folder, Gradio decides."""
    try:
        rel = target.relative_to(root)
    except ValueError:
        return True
    if any(part.startswith(".") for part in rel.parts):
        return False
    if not spaces:
        return True
    if login is None or not rel.parts:
        return False
    if rel.parts[0] == space_name(login):
        return True
    if rel.parts[0] == TRAINING and len(rel.parts) > 2:
        try:
            job = json.loads((root / TRAINING / rel.parts[1] / "job.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(job, dict) and job.get("owner") == login
    return False


class OutputsGuard:
    """ASGI middleware: a file-route request for a file in `root` that is not the caller's gets 404."""

    def __init__(self, app, root: Path, spaces: bool) -> None:
        self.app, self.root, self.spaces = app, Path(root).resolve(), spaces

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope.get("type") == "http" else ""
        at = path.find("/file=")
        if at >= 0:
            target = Path(path[at + len("/file="):])
            if not target.is_absolute():
                target = Path.cwd() / target
            if not may_read(self.root, target.resolve(), login_of(scope), self.spaces):
                await send({"type": "http.response.start", "status": 404,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                await send({"type": "http.response.body", "body": b"Not found"})
                return
        await self.app(scope, receive, send)
