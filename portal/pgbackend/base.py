"""Django's PostgreSQL backend with a health check that needs no round trip.

With CONN_HEALTH_CHECKS (runtime/database.py) Django checks a persistent connection before a
request first uses it, and its check is a `SELECT 1`: one round trip of the six a REST
create makes (without it, in-process, a create's p50 is 0.4-0.5 ms lower and its CPU
0.2-0.3 ms: docs/performance.md). A server that ends a connection (a restart, an idle timeout,
pg_terminate_backend) sends its goodbye, an error message and then end-of-file, which wait
on the socket of an idle connection. So an idle connection with nothing to read is usable,
and one with anything to read is left to Django's own check, which reads it.

What the two checks cannot tell apart is the same: a server that vanished without closing
(a network partition) leaves both waiting for TCP to give up, and a connection ended between
the check and the first query fails that request either way. One race differs: a session
whose end is under way (its backend signalled, not yet gone, about a millisecond) passes
this check, where a `SELECT 1` sent into it may fail and be replaced first; its request then
fails, as any request already running on that session does.
"""
from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg import pq


def has_input(fileno: int) -> bool:
    """Whether anything (data, an error, end-of-file) waits to be read on the socket."""
    poller = select.poll()  # not select.select: its descriptors must be below 1024
    poller.register(fileno, select.POLLIN)
    return bool(poller.poll(0))


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        conn = self.connection
        if conn is None or conn.closed:  # closed: libpq's status is BAD (broken ones too)
            return False
        if conn.info.transaction_status == pq.TransactionStatus.IDLE and not has_input(conn.fileno()):
            return True
        return super().is_usable()
