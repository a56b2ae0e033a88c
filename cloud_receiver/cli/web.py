"""``web``: the portal and the HTTP API (`cloud_receiver.web`), served by uvicorn;
``web-cert``: its TLS certificate from the deployment's CA."""

from __future__ import annotations

from pathlib import Path

import click

from clitools.options import db_option, json_option, pki_dir_option
from cloud_receiver.cli.common import collection_options

_FILE = click.Path(path_type=Path, dir_okay=False)
WEB_CERT = "web"  # web.crt / web.key in the PKI directory


@click.command("web")
@db_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8443, show_default=True)
@click.option(
    "--secret-key",
    "secret_key",
    type=_FILE,
    required=True,
    help="Hex key that signs the session cookies (made, mode 0600, if missing; keep it"
    " across restarts so that logins survive them).",
)
@click.option("--tls-cert", type=_FILE, default=None, help="The server's certificate (PEM).")
@click.option("--tls-key", type=_FILE, default=None, help="Its private key (PEM).")
@click.option(
    "--language",
    type=click.Choice(["zh", "en"]),
    default="zh",
    show_default=True,
    help="The pages' language until a visitor chooses.",
)
@click.option(
    "--login-attempts",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Login attempts allowed per client address per minute (then 429).",
)
@collection_options("--collection-interval")
@json_option()
def web(
    db_url: str,
    host: str,
    port: int,
    secret_key: Path,
    tls_cert: Path | None,
    tls_key: Path | None,
    language: str,
    login_attempts: int,
    interval_s: int,
    late_after: float,
    as_json: bool,
) -> None:
    """Serve the portal and the HTTP API (/api/v1, its OpenAPI document at
    /api/openapi.json) over HTTPS with --tls-cert/--tls-key (plain HTTP without: only
    behind a TLS proxy or for a local test). Runs until stopped."""
    import gc
    import json

    import uvicorn

    from cloud_receiver.web.app import create_app
    from cloud_receiver.web.settings import WebSettings

    settings = WebSettings(
        db_url, secret_key, tls_cert, tls_key, language, login_attempts=login_attempts,
        collection_interval_s=interval_s, late_after_s=int(late_after),
    )  # fmt: skip
    app = create_app(settings)
    # What is loaded by now (modules, the app, its routes and schemas) lives as long as
    # the process: frozen out of the cyclic collector's sight, a full collection walks
    # only what requests made, not ~150,000 objects from startup (pauses of 10-90 ms on
    # the portal's month page, every few views, before).
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=None if tls_cert is None else str(tls_cert),
        ssl_keyfile=None if tls_key is None else str(tls_key),
        log_level="warning",
        access_log=False,
        server_header=False,
        # A TLS proxy on this host names the client (the login rate limit is per client).
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
    )
    scheme = "https" if tls_cert is not None else "http"
    url = f"{scheme}://{host}:{port}/"
    if as_json:
        click.echo(json.dumps({"url": url, "api": f"{url}api/v1", "tls": tls_cert is not None}))
    else:
        click.echo(f"serving the portal at {url} (API {url}api/v1; Ctrl-C stops)", err=True)
    uvicorn.Server(config).run()


@click.command("web-cert")
@pki_dir_option(help="The deployment's PKI directory (its CA signs the certificate).")
@click.option("--host", "hostnames", multiple=True, help="A DNS name of the portal (repeatable).")
@click.option("--ip", "ips", multiple=True, help="An IP address of the portal (repeatable).")
@json_option()
def web_cert(
    pki_dir: Path, hostnames: tuple[str, ...], ips: tuple[str, ...], as_json: bool
) -> None:
    """Issue the portal's TLS certificate (web.crt, web.key in --pki-dir) from the
    deployment's CA, for `cloud-receiver web --tls-cert/--tls-key`. Browsers trust it
    once ca.crt is installed; a public name can use a public CA's certificate instead."""
    from clitools.output import result
    from cloud_receiver.applications.fleet import pki
    from cloud_receiver.errors import ReceiverError

    if not hostnames and not ips:
        raise click.UsageError("give at least one --host NAME or --ip ADDRESS")
    try:
        pki.init_pki(pki_dir)
        crt, key = pki.issue_server_cert(pki_dir, hostnames, ips, name=WEB_CERT)
    except OSError as exc:
        raise ReceiverError(str(exc)) from exc
    result(
        as_json,
        f"{crt}\n{key}",
        {"cert": str(crt), "key": str(key), "ca": str(pki_dir / f"{pki.CA_NAME}.crt")},
    )


COMMANDS = [web, web_cert]
