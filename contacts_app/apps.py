from django.apps import AppConfig


class ContactsAppConfig(AppConfig):
    name = "contacts_app"
    verbose_name = "Contacts"
