from django.db import migrations


class Migration(migrations.Migration):
    """State only (the table is migrations/*.sql's): the view_outbox_payload permission."""

    dependencies = [("outbox", "0010_retention_watermark")]

    operations = [
        migrations.AlterModelOptions(
            name="outboxevent",
            options={
                "ordering": ["-id"],
                "verbose_name": "outbox event",
                "permissions": [("view_outbox_payload",
                                 "Can view outbox event payloads (data, changed, actor, request id)")],
            },
        ),
    ]
