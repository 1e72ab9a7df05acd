"""Baseline for ``bench_directory_lookup.py``: what a user would write instead of our
service. Flask + redis-py, one HGET per lookup, a string template; run under gunicorn
(``gunicorn -w 1 bench.flask_directory_baseline:app``). ``REDIS_URL`` names the Redis."""

from __future__ import annotations

import json
import os
from xml.sax.saxutils import quoteattr

import redis
from flask import Flask, Response, request

app = Flask(__name__)
client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))

NOT_FOUND = (
    '<document type="freeswitch/xml"><section name="result">'
    '<result status="not found"/></section></document>'
)
USER = (
    '<document type="freeswitch/xml"><section name="directory"><domain name={domain}>'
    '<groups><group name="default"><users><user id={user}><params>{params}</params>'
    "<variables>{variables}</variables></user></users></group></groups></domain></section>"
    "</document>"
)


def _items(tag: str, values: dict[str, object]) -> str:
    return "".join(
        f"<{tag} name={quoteattr(k)} value={quoteattr(str(v))}/>" for k, v in values.items()
    )


@app.post("/directory")
def directory() -> Response:
    user, domain = request.form.get("user", ""), request.form.get("domain", "")
    raw = client.hget(f"cti_exten@{domain}", user) if user and domain else None
    if raw is None:
        return Response(NOT_FOUND, mimetype="text/xml")
    entry = json.loads(raw)
    body = USER.format(
        domain=quoteattr(domain),
        user=quoteattr(user),
        params=_items("param", entry.get("param", {})),
        variables=_items("variable", entry.get("variable", {})),
    )
    return Response(body, mimetype="text/xml")
