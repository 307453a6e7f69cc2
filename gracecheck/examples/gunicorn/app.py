"""The tiny WSGI app for gunicorn: GET / answers, GET /sleep?ms=N waits first."""
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        time.sleep(int(parse_qs(environ["QUERY_STRING"]).get("ms", ["0"])[0]) / 1000)
    elif path != "/":
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    body = b"hello from gunicorn\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
