import json, itertools
import pytest
from django.test import Client
from contacts_app.services import contact_upsert
from templates_app.models import Template
from tests.conftest import chain

pytestmark = pytest.mark.django_db

BAD = [None, 0, -1, 2**64, 1.5, "x", "", [], {}, [1], {"a": 1}, True, "\u0000", "a"*5000, "1e309", "9"*40, "-0", "%", "\ud800"]

def call(c, method, path, key, body=None, raw=None, ct="application/json"):
    fn = getattr(c, method)
    kw = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    if method in ("get", "delete") and body is not None and isinstance(body, dict):
        return fn(path, body, **kw)
    data = raw if raw is not None else (json.dumps(body) if body is not None else "")
    return fn(path, data=data, content_type=ct, **kw)

def test_fuzz(secret_key, public_key, template, make_workflow):
    c = Client(raise_request_exception=False)
    ct = contact_upsert(email="a@example.com", data={"x": 1})[0]
    steps, trans = chain({"key": "s1", "type": "SEND_EMAIL", "config": {"template": template.pk}} if False else {"key":"w1","type":"delay","config":{"amount":1,"unit":"hours"}})
    wf = make_workflow(steps, trans)
    paths = [
        ("get", "/v1/contacts"), ("post", "/v1/contacts"), ("post", "/v1/contacts/lookup"), ("get", "/v1/contacts/fields"),
        ("get", f"/v1/contacts/{ct.pk}"), ("patch", f"/v1/contacts/{ct.pk}"), ("get", "/v1/contacts/a@example.com"),
        ("post", "/v1/contacts/bulk-subscribe"), ("post", "/v1/contacts/bulk-delete"), ("get", "/v1/contacts/jobs/zzz"),
        ("get", "/v1/templates"), ("post", "/v1/templates"), ("patch", f"/v1/templates/{template.pk}"), ("put", f"/v1/templates/{template.pk}"),
        ("post", f"/v1/templates/{template.pk}/preview"), ("post", f"/v1/templates/{template.pk}/duplicate"),
        ("get", "/v1/events"), ("get", "/v1/events/names"), ("get", "/v1/events/stats"), ("get", f"/v1/events/contact/{ct.pk}"),
        ("post", "/v1/send"),
        ("get", "/v1/workflows"), ("post", "/v1/workflows"), ("patch", f"/v1/workflows/{wf.pk}"), ("put", f"/v1/workflows/{wf.pk}/graph"),
        ("post", f"/v1/workflows/{wf.pk}/steps"), ("patch", f"/v1/workflows/{wf.pk}/steps/w1"), ("delete", f"/v1/workflows/{wf.pk}/steps/w1"),
        ("post", f"/v1/workflows/{wf.pk}/transitions"),
        ("post", f"/v1/workflows/{wf.pk}/executions"), ("get", f"/v1/workflows/{wf.pk}/executions"),
        ("post", f"/v1/workflows/{wf.pk}/executions/cancel-all"),
    ]
    fields = ["email","subscribed","data","search","limit","cursor","sort","dir","name","type","subject","html","text","from_email","fromEmail","replyTo","reply_to",
              "to","template","body","from","reply","headers","attachments","contactId","context","status","mode","contactIds","filter","excludeIds",
              "description","enabled","allowReentry","trigger","triggerEvent","triggerType","graph","version","steps","transitions","key","config","splice","from_step","to_step","fromStep","toStep","eventName","event","period","days","start","end","startDate","endDate","page","id","condition","branch","delay"]
    fails = []
    for (m, p) in paths:
        for f in fields:
            for v in BAD:
                if m == "get":
                    if v is None or v == "\ud800" or isinstance(v, (dict, list)): continue
                    r = c.get(p, {f: str(v)}, HTTP_AUTHORIZATION=f"Bearer {secret_key}")
                else:
                    r = call(c, m, p, secret_key, {f: v})
                if r.status_code >= 500:
                    fails.append((m, p, f, repr(v)[:40], r.status_code, r.content[:200]))
    # public keys
    pub = []
    for (m, p) in paths:
        r = call(c, m, p, public_key, {})
        if r.status_code != 403:
            pub.append((m, p, r.status_code))
    print("FAILS", len(fails))
    for x in fails[:80]: print(x)
    print("PUB", pub)
    assert not fails and not pub
