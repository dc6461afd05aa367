"""The executions API's routes (included by config/urls.py under /v1/, before the workflows
API's own)."""

from django.urls import path

from workflows_app.api_executions import (
    ExecutionDetailView,
    ExecutionsCancelAllView,
    WorkflowExecutionsView,
)

urlpatterns = [
    path(
        "workflows/<int:workflow_id>/executions",
        WorkflowExecutionsView.as_view(),
        name="workflow-executions",
    ),
    path(
        "workflows/<int:workflow_id>/executions/cancel-all",
        ExecutionsCancelAllView.as_view(),
        name="workflow-executions-cancel-all",
    ),
    path(
        "workflows/<int:workflow_id>/executions/<int:execution_id>",
        ExecutionDetailView.as_view(),
        name="workflow-execution",
    ),
]
