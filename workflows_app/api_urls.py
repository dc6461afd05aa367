"""The workflows API's routes (included by config/urls.py under /v1/, after executions_urls.py,
which has /v1/workflows/<id>/executions...). A transition's id is "<fromStepId>:<branch>"."""

from django.urls import path

from workflows_app.api_workflows import (
    StepDetailView,
    StepListView,
    TransitionDetailView,
    TransitionInsertStepView,
    TransitionListView,
    WorkflowDetailView,
    WorkflowDuplicateView,
    WorkflowGraphView,
    WorkflowListView,
    WorkflowSimulateView,
    WorkflowStatsView,
)

urlpatterns = [
    path("workflows", WorkflowListView.as_view(), name="workflow-list"),
    path("workflows/<int:workflow_id>", WorkflowDetailView.as_view(), name="workflow-detail"),
    path(
        "workflows/<int:workflow_id>/duplicate",
        WorkflowDuplicateView.as_view(),
        name="workflow-duplicate",
    ),
    path("workflows/<int:workflow_id>/graph", WorkflowGraphView.as_view(), name="workflow-graph"),
    path(
        "workflows/<int:workflow_id>/simulate",
        WorkflowSimulateView.as_view(),
        name="workflow-simulate",
    ),
    path("workflows/<int:workflow_id>/stats", WorkflowStatsView.as_view(), name="workflow-stats"),
    path("workflows/<int:workflow_id>/steps", StepListView.as_view(), name="workflow-steps"),
    path(
        "workflows/<int:workflow_id>/steps/<str:key>",
        StepDetailView.as_view(),
        name="workflow-step",
    ),
    path(
        "workflows/<int:workflow_id>/transitions",
        TransitionListView.as_view(),
        name="workflow-transitions",
    ),
    path(
        "workflows/<int:workflow_id>/transitions/<str:transition_id>",
        TransitionDetailView.as_view(),
        name="workflow-transition",
    ),
    path(
        "workflows/<int:workflow_id>/transitions/<str:transition_id>/insert-step",
        TransitionInsertStepView.as_view(),
        name="workflow-transition-insert-step",
    ),
]
