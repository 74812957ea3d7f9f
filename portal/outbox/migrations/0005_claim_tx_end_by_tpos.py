from django.db import migrations

from portal.outbox.sqlfiles import ApplyStep


class Migration(migrations.Migration):
    """The claim's transaction-end lookup by an index only it can use (migrations/0004_claim_tx_end_by_tpos.sql)."""

    dependencies = [("outbox", "0004_capture_per_table")]

    operations = [ApplyStep("outbox", 4, "0004_claim_tx_end_by_tpos.sql")]
