"""Web: the portal and the HTTP JSON API that ``cloud-receiver web`` serves (FastAPI
on Starlette, Jinja2 templates, uvicorn).

- `settings`: what the server is started with (database, secret key file, TLS, language);
- `security`: who is calling (a login session in a signed cookie, or an API token), the
  role check (`cloud_receiver.access.policy.authorize`, the one place) with the audit of
  every refusal and customer-data view, CSRF tokens, login rate limiting;
- `data`: the read-side queries that pages and API share (one place);
- `api`: ``/api/v1/...`` with its OpenAPI document at ``/api/openapi.json``;
- `pages`: the login and the portal's pages (templates in ``templates/``);
- `app`: `create_app`, which wires them together.

It reads the receiver's database and never writes data directly: commands and top-ups
go through the same application code (`cloud_receiver.applications`) and role checks
as the command line. A layer of the receiver between the command line and the
applications.
"""
