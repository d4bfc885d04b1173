"""The policies as a database at an older revision had them: today's statements, less those of tables it lacks yet."""

from __future__ import annotations

from sqlalchemy.engine import Connection
from sqlalchemy.exc import ProgrammingError

from db.policies import policy_statements


def apply_policies_of_existing_tables(connection: Connection) -> None:
    for statement in policy_statements():
        try:
            with connection.begin_nested():
                connection.exec_driver_sql(statement)
        except ProgrammingError as error:
            if "does not exist" not in str(error):
                raise
