"""A small Django project standing in for Thor in the tests."""
