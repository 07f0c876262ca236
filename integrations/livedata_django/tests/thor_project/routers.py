"""Send every query to the database a test chose (``default`` is SQLite, ``postgres`` PostgreSQL)."""

TARGET = "default"


class OneDatabase:
    def db_for_read(self, model, **hints):
        return TARGET

    def db_for_write(self, model, **hints):
        return TARGET

    def allow_relation(self, obj1, obj2, **hints):
        return True
