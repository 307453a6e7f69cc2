"""The tiny ASGI app for uvicorn: GET / answers, GET /sleep?ms=N waits first."""
import asyncio
from urllib.parse import parse_qs


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/sleep":
        ms = int(parse_qs(scope["query_string"].decode()).get("ms", ["0"])[0])
        await asyncio.sleep(ms / 1000)
    status, body = (200, b"hello from uvicorn\n") if path in ("/", "/sleep") else (404, b"")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
