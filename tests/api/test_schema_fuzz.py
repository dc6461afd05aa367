"""The whole API, fuzzed from its own description (schemathesis against /v1/openapi.json):
no request, however odd, gets a 500, and every response matches what the description says
(status code, content type, body schema, headers)."""

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from config.wsgi import application

# What the issue asks of every response. (schemathesis's stricter positive/negative data checks
# would also require the description to state every rule a field follows, such as "a UUID or
# an email address"; the API answers those with a documented 400 naming the field.)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.ignored_auth,  # every endpoint refuses a request without its key
]

# In-process over WSGI: the real middleware, views and database, no server to start. Reading
# the description needs no database.
schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", application)


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases on every run: a failure here is reproducible
)
def test_no_request_breaks_the_api_or_its_description(case, transactional_db, secret_key):
    case.call_and_validate(headers={"Authorization": f"Bearer {secret_key}"}, checks=CHECKS)
