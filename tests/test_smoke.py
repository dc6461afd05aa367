from contacts_app.models import Contact
from tests.conftest import chain, drain
from workflows_app.models import Execution, StepRun


def test_it_runs_a_workflow_end_to_end(track, template, make_workflow):
    steps, transitions = chain(
        {"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}},
        {"key": "tag", "type": "update_contact", "config": {"set": {"stage": "welcomed"}}},
        {
            "key": "is_pro",
            "type": "condition",
            "config": {"field": "event.plan", "operator": "equals", "value": "pro"},
        },
    )
    make_workflow(steps, transitions)
    response = track.post(
        {
            "event": "user.signup",
            "email": "Ann@Example.com",
            "data": {"firstName": "Ann", "plan": "pro"},
        }
    )
    assert response.status_code == 200, response.content
    drain()
    ex = Execution.objects.get()
    assert ex.status == Execution.COMPLETED, ex.error
    assert [r.step_key for r in StepRun.objects.order_by("id")] == ["welcome", "tag", "is_pro"]
    assert StepRun.objects.get(step_key="is_pro").branch == "yes"
    assert Contact.objects.get().data["stage"] == "welcomed"
