import pytest


@pytest.fixture(autouse=True)
def _locmem_email(settings):
    # Sent mail lands in django.core.mail.outbox; nothing leaves the machine.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
