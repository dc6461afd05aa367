"""contact_data_capped(merged, max_bytes): returns `merged`, or raises SQLSTATE LC413 when its JSON
text is longer than `max_bytes` (0: no cap). /v1/track's one statement calls it on the contact's
merged data, so a call that would pass CONTACT_MAX_DATA_BYTES aborts whole: no contact change, no
event, no execution, no Idempotency-Key claim. PostgreSQL only (SQLite takes the ORM path)."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION contact_data_capped(merged jsonb, max_bytes integer)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  size integer;
BEGIN
  IF max_bytes > 0 THEN
    size := octet_length(merged::text);
    IF size > max_bytes THEN
      RAISE EXCEPTION 'contact data would be % bytes, over the cap of % bytes', size, max_bytes
        USING ERRCODE = 'LC413';
    END IF;
  END IF;
  RETURN merged;
END
$$;
"""
DROP = "DROP FUNCTION IF EXISTS contact_data_capped(jsonb, integer);"


def _on_postgresql(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)  # no placeholders: % is plpgsql's

    return run


class Migration(migrations.Migration):
    dependencies = [("contacts_app", "0001_initial")]

    operations = [
        migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP), elidable=False),
    ]
